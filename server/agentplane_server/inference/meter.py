"""Usage metering and the per-project inference_tokens_per_day quota, off the hot path.

Calls check the quota against an in-memory view (the day's total as last read from the
database, refreshed at most every REFRESH_SECONDS per project, plus this process's usage not yet
written), and hand their usage records to a buffer that a background task writes in batches.
The buffer is flushed on shutdown (a stop hook) and kept, never dropped, while the database is
away. With several replicas each one sees the others' usage within REFRESH_SECONDS plus one
flush interval, so a project can overrun its quota by what its replicas serve in that window,
plus the calls already running when the quota was reached (their size is not known up front).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.errors import ResourceExhausted
from agentplane_server.inference.store import UsageStore
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
REFRESH_SECONDS = 2.0
FLUSH_SECONDS = 0.5
FLUSH_BATCH = 1000


def utc_day(time_us: int) -> int:
    return time_us // DAY_US


@dataclass(slots=True)
class _View:
    read_at: float
    limit: int
    stored: int  # the day's tokens in the database when read, plus what this process wrote since


class UsageMeter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.store = UsageStore(db.is_sqlite)
        self._views: dict[tuple[str, int], _View] = {}
        self._unwritten: dict[tuple[str, int], int] = {}
        self._buffer: list[dict[str, Any]] = []
        # Refreshes and flushes exclude each other, so a refresh never reads a batch that the
        # flush is about to add to the view as well.
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- quota ----------------------------------------------------------------------------------

    async def check_quota(self, project_id: str) -> None:
        """RESOURCE_EXHAUSTED (ERROR_REASON_QUOTA_EXCEEDED) when today's tokens are spent."""
        key = (project_id, utc_day(now_us()))
        view = self._views.get(key)
        if view is None or time.monotonic() - view.read_at > REFRESH_SECONDS:
            view = await self._refresh(key)
        if not view.limit:
            return
        used = view.stored + self._unwritten.get(key, 0)
        if used >= view.limit:
            raise ResourceExhausted(
                f"project {project_id!r} has used its {view.limit} inference tokens for today "
                f"(UTC); the quota resets at midnight UTC",
                reason=ErrorReason.ERROR_REASON_QUOTA_EXCEEDED,
                metadata={
                    "project_id": project_id,
                    "quota": "inference_tokens_per_day",
                    "limit": str(view.limit),
                    "used": str(used),
                },
            )

    async def _refresh(self, key: tuple[str, int]) -> _View:
        async with self._lock:
            view = self._views.get(key)
            if view is not None and time.monotonic() - view.read_at <= REFRESH_SECONDS:
                return view  # another call refreshed it while this one waited
            async with self.db.read() as c:
                _, limit, stored = await self.store.quota_and_usage(c, key[0], key[1])
            view = self._views[key] = _View(time.monotonic(), limit, stored)
            for old in [k for k in self._views if k[1] < key[1]]:  # yesterday's views
                del self._views[old]
            return view

    # -- recording ------------------------------------------------------------------------------

    def record(
        self,
        *,
        project_id: str,
        agent_id: str,
        session_id: str,
        method: str,
        model: str,
        model_version: str,
        request_id: str,
        input_tokens: int,
        output_tokens: int,
        finish_reason: int = 0,
    ) -> None:
        time_us = now_us()
        row = {
            "usage_id": f"inu_{secrets.token_hex(10)}",
            "project_id": project_id,
            "agent_id": agent_id,
            "session_id": session_id,
            "method": method,
            "model": model,
            "model_version": model_version,
            "request_id": request_id[:128],
            "input_tokens": int(input_tokens),
            "output_tokens": int(output_tokens),
            "finish_reason": int(finish_reason),
            "create_time_us": time_us,
        }
        key = (project_id, utc_day(time_us))
        self._unwritten[key] = (
            self._unwritten.get(key, 0) + row["input_tokens"] + row["output_tokens"]
        )
        self._buffer.append(row)
        if self._task is None and not self._closed:
            # A fresh context: the writer must not log under the first caller's request id.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        if len(self._buffer) >= FLUSH_BATCH:
            self._wake.set()

    async def _run(self) -> None:
        backoff = FLUSH_SECONDS
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            try:
                await self.flush()
                backoff = FLUSH_SECONDS
            except Exception as exc:  # the database is away: keep the rows, retry later
                backoff = min(backoff * 2, 10.0)
                log.warning(
                    "inference usage not written yet; retrying",
                    extra={"rows": len(self._buffer), "error": type(exc).__name__},
                )

    async def flush(self) -> None:
        """Write the buffered usage (raises, keeping the rows, when the database fails)."""
        async with self._lock:
            while self._buffer:
                batch = self._buffer[:FLUSH_BATCH]
                async with self.db.write() as c:
                    await self.store.add(c, batch)
                del self._buffer[: len(batch)]
                written: dict[tuple[str, int], int] = {}
                for row in batch:
                    key = (row["project_id"], utc_day(row["create_time_us"]))
                    written[key] = written.get(key, 0) + row["input_tokens"] + row["output_tokens"]
                for key, tokens in written.items():
                    left = self._unwritten.get(key, 0) - tokens
                    if left > 0:
                        self._unwritten[key] = left
                    else:
                        self._unwritten.pop(key, None)
                    view = self._views.get(key)
                    if view is not None:
                        view.stored += tokens

    async def close(self) -> None:
        """Stop the background writer and write what is left (a server stop hook)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for attempt in range(5):
            try:
                await self.flush()
                return
            except Exception:
                log.warning("inference usage flush failed at shutdown", extra={"try": attempt + 1})
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("inference usage lost at shutdown", extra={"rows": len(self._buffer)})

    async def housekeeping(self, db: Database, retention_days: int) -> dict[str, int]:
        """Remove usage older than the retention (a housekeeping job)."""
        cutoff = now_us() - retention_days * DAY_US
        async with db.write() as c:
            return await self.store.remove_before(c, cutoff)
