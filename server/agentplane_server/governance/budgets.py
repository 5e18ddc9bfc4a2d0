"""Policy budgets: spend per sliding window, kept in memory and written behind.

A budget's window is cut into buckets (window / 60, at least 100 ms); the spend in the window
is the sum of the buckets that started within it, so the window slides in bucket steps (at most
one bucket of imprecision). Charges go to this process's memory at once (CheckPermission never
waits on the database for a budget) and are flushed to governance_budget_spend every
sync interval by adding them to the shared bucket rows; the same sync reads back the totals of
every replica for the budgets in use here.

Consistency across replicas, honestly: each replica decides from the shared totals as of its
last sync plus its own charges since, so N replicas can together overspend a budget by what
they allow between two syncs (at most about N x rate x sync interval). With one replica a
budget is exact up to the bucket step. A charge whose flush fails is kept and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass

from agentplane.governance.v1 import policy_pb2
from agentplane_server.governance import store
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

BUCKETS_PER_WINDOW = 60
MIN_BUCKET_US = 100_000
Key = tuple[str, str]  # (project_id, budget_key)


def bucket_width(window_us: int) -> int:
    return max(MIN_BUCKET_US, window_us // BUCKETS_PER_WINDOW)


def budget_key(policy_id: str, budget: policy_pb2.Budget, agent_id: str) -> str:
    """Spend is kept across policy updates while metric, window and per_agent stay the same."""
    who = agent_id if budget.per_agent else "*"
    return f"{policy_id}|{budget.metric}|{budget.window.ToMicroseconds()}|{who}"


def usage_amount(metric: int, input_tokens: int, output_tokens: int, cost_micros: int) -> int:
    if metric == policy_pb2.BUDGET_METRIC_CALLS:
        return 1
    if metric == policy_pb2.BUDGET_METRIC_TOKENS:
        return input_tokens + output_tokens
    return cost_micros


@dataclass(slots=True)
class _Use:
    window_us: int
    last_use_us: int


class BudgetLedger:
    def __init__(self, db: Database, sync_interval: float) -> None:
        self.db = db
        self.sync_interval = sync_interval
        self._known: dict[Key, dict[int, int]] = {}  # shared totals as of the last read
        self._flushed: dict[Key, dict[int, int]] = defaultdict(dict)  # written, not yet read
        self._inflight: dict[Key, dict[int, int]] = defaultdict(dict)  # being written
        self._pending: dict[Key, dict[int, int]] = defaultdict(dict)  # not written yet
        self._use: dict[Key, _Use] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()

    def spent(self, key: Key, window_us: int, now: int) -> int:
        self._use[key] = _Use(window_us, now)
        since = now - window_us
        total = 0
        for source in (self._known, self._flushed, self._inflight, self._pending):
            buckets = source.get(key)
            if buckets:
                total += sum(a for b, a in buckets.items() if b > since)
        return total

    def charge(self, key: Key, window_us: int, amount: int, now: int) -> int:
        """Add `amount` to the current bucket; returns the bucket (for later adjustment)."""
        width = bucket_width(window_us)
        bucket = now - now % width
        self.add(key, bucket, amount)
        return bucket

    def add(self, key: Key, bucket: int, amount: int) -> None:
        if amount:
            buckets = self._pending[key]
            buckets[bucket] = buckets.get(bucket, 0) + amount
            self._wake.set()

    # -- write-behind ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._closing.set()  # ends after the sync in flight; a cancel could abandon a write
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 30)
            self._task = None
        for _ in range(3):  # flush what is left; the database may be briefly away
            if not self._pending:
                break
            if not await self.sync():
                await asyncio.sleep(0.5)
        if self._pending:
            log.error(
                "budget spend could not be written at shutdown",
                extra={"budgets": len(self._pending)},
            )

    async def _loop(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.sync_interval)
            if self._closing.is_set():
                return
            if self._pending or self._use:
                await self.sync()

    async def sync(self) -> bool:
        """Write pending charges, then read back the shared totals of the budgets in use."""
        now = now_us()
        self._use = {k: u for k, u in self._use.items() if now - u.last_use_us <= u.window_us}
        try:
            if self._pending:
                self._inflight, self._pending = self._pending, defaultdict(dict)
                rows = [
                    {"project_id": p, "budget_key": k, "bucket_us": b, "amount": a}
                    for (p, k), buckets in self._inflight.items()
                    for b, a in buckets.items()
                    if a
                ]
                if rows:
                    async with self.db.write() as c:
                        await store.add_spend(c, rows)
                for key, buckets in self._inflight.items():
                    mine = self._flushed[key]
                    for b, a in buckets.items():
                        mine[b] = mine.get(b, 0) + a
                self._inflight = defaultdict(dict)
            by_project: dict[str, list[str]] = defaultdict(list)
            longest: dict[str, int] = defaultdict(int)
            for (project_id, key), use in self._use.items():
                by_project[project_id].append(key)
                longest[project_id] = max(longest[project_id], use.window_us)
            if by_project:
                known: dict[Key, dict[int, int]] = {}
                async with self.db.read() as c:
                    for project_id, keys in by_project.items():
                        for row in await store.read_spend(
                            c, project_id, keys, now - longest[project_id]
                        ):
                            known.setdefault((project_id, row.budget_key), {})[row.bucket_us] = int(
                                row.amount
                            )
                self._known = known
                self._flushed = defaultdict(dict)
            return True
        except Exception as exc:
            for key, buckets in self._inflight.items():
                for b, a in buckets.items():
                    self.add(key, b, a)
            self._inflight = defaultdict(dict)
            log.warning("budget sync failed; retrying", extra={"error": type(exc).__name__})
            return False
