"""The decision log, written behind the decision in batches.

CheckPermission and ValidateOutput append a record to a bounded in-memory queue and answer at
once; a background task inserts the queue in batches. While the database is away the batch is
kept and retried with backoff; when the queue is full the RPC is refused with
RESOURCE_EXHAUSTED and RetryInfo before anything is decided (backpressure), so no decision is
ever dropped. Inserts skip decision ids already stored, so a batch retried after a commit whose
acknowledgement was lost is stored once. On shutdown the queue is flushed (retrying until the
deadline); what still cannot be written then goes to a spill file in the data directory, which
the next start of any server on that directory loads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.governance.v1 import decision_pb2
from agentplane_server.errors import ResourceExhausted
from agentplane_server.governance import store
from agentplane_server.storage.db import Database

log = logging.getLogger(__name__)

BACKLOG = Gauge(
    "agentplane_governance_decision_log_backlog",
    "Decisions made but not yet written to the decision log.",
    multiprocess_mode="livesum",
)
WRITTEN = Counter(
    "agentplane_governance_decision_log_written", "Decision log records written to the database."
)
REFUSED = Counter(
    "agentplane_governance_decision_log_refused",
    "Checks refused with RESOURCE_EXHAUSTED because the decision log queue was full.",
)
SPILL_PREFIX = "decision-log-spill-"


class DecisionLog:
    def __init__(
        self,
        db: Database,
        *,
        capacity: int,
        batch_size: int,
        flush_interval: float,
        spill_dir: Path,
    ) -> None:
        self.db = db
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spill_dir = spill_dir
        # (record, budget charges): rows are built by the writer, off the request path.
        self._queue: deque[tuple[decision_pb2.DecisionRecord, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._failures = 0
        self._closing = False

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def reserve(self) -> None:
        """Refuse a new decision while the queue is full (called before deciding)."""
        if len(self._queue) >= self.capacity:
            REFUSED.inc()
            raise ResourceExhausted(
                "the decision log is falling behind; retry shortly",
                reason=ErrorReason.ERROR_REASON_RATE_LIMITED,
                metadata={"backlog": str(len(self._queue))},
                retry_after=max(0.1, self.flush_interval * 4),
            )

    def append(self, record: decision_pb2.DecisionRecord, charges: Any = None) -> None:
        self._queue.append((record, charges))
        BACKLOG.inc()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        await self._load_spills()
        while not self._closing:
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            elif len(self._queue) < self.batch_size:
                # Let a batch gather for one interval, unless it fills first.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            if self._closing:
                return
            if not await self.flush_once():
                await asyncio.sleep(min(2.0, 0.1 * 2 ** min(self._failures, 5)))

    async def flush_once(self) -> bool:
        """Write one batch from the head of the queue; False when the database refused."""
        if not self._queue:
            return True
        count = min(self.batch_size, len(self._queue))
        rows, policy_rows = _rows(self._queue[i] for i in range(count))
        try:
            async with self.db.write() as c:
                await store.insert_decisions(c, rows, policy_rows)
        except Exception as exc:
            self._failures += 1
            log.warning(
                "decision log write failed; retrying",
                extra={"error": type(exc).__name__, "backlog": len(self._queue)},
            )
            return False
        self._failures = 0
        for _ in range(count):
            self._queue.popleft()
        BACKLOG.dec(count)
        WRITTEN.inc(count)
        return True

    async def close(self, deadline_seconds: float) -> None:
        """Stop the background task, then flush everything (until the deadline), then spill."""
        if self._task is not None:
            # Never cancel a write in flight: a transaction abandoned mid-statement can keep
            # SQLite's write lock. The loop ends after its current batch.
            self._closing = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), deadline_seconds)
            if not self._task.done():
                self._task.cancel()
            self._task = None
        deadline = time.monotonic() + deadline_seconds
        delay = 0.1
        while self._queue and time.monotonic() < deadline:
            if not await self.flush_once():
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        if self._queue:
            self._spill()

    # -- spill files ------------------------------------------------------------------------------

    def _spill(self) -> None:
        path = self.spill_dir / f"{SPILL_PREFIX}{os.getpid()}-{time.time_ns()}.jsonl"
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for record, charges in self._queue:
                encoded = base64.b64encode(record.SerializeToString()).decode()
                f.write(json.dumps([encoded, charges]) + "\n")
        log.error(
            "the database stayed away; decision log records spilled to a file, loaded at the "
            "next start",
            extra={"records": len(self._queue), "path": str(path)},
        )
        BACKLOG.dec(len(self._queue))
        self._queue.clear()

    async def _load_spills(self) -> None:
        for path in sorted(self.spill_dir.glob(f"{SPILL_PREFIX}*.jsonl")):
            claimed = path.with_suffix(".loading")
            try:
                path.rename(claimed)  # one process takes each file
            except OSError:
                continue
            entries = [json.loads(line) for line in claimed.read_text().splitlines() if line]
            for encoded, charges in entries:
                record = decision_pb2.DecisionRecord.FromString(base64.b64decode(encoded))
                self.append(record, charges)
            # The file goes only once its records are in the database.
            while self._queue:
                if not await self.flush_once():
                    await asyncio.sleep(1.0)
            claimed.unlink()
            log.info("loaded spilled decision log records", extra={"records": len(entries)})


def _rows(entries: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, policy_rows = [], []
    for record, charges in entries:
        created = record.create_time.ToMicroseconds()
        rows.append(
            {
                "decision_id": record.decision_id,
                "project_id": record.project_id,
                "kind": record.kind,
                "agent_id": record.agent_id,
                "action": record.action,
                "decision": record.decision,
                "verdict": record.verdict,
                "record": record.SerializeToString(),
                "charges": charges,
                "create_time_us": created,
            }
        )
        for policy_id in dict.fromkeys(record.policy_ids):
            if policy_id:
                policy_rows.append(
                    {
                        "project_id": record.project_id,
                        "policy_id": policy_id,
                        "decision_id": record.decision_id,
                        "create_time_us": created,
                    }
                )
    return rows, policy_rows
