"""One housekeeping loop per deployment: retention, lease expiry and other periodic jobs.

Every worker process and replica runs this loop, but only the holder of the deployment-wide
lock does the work: a PostgreSQL session advisory lock (released by the database if the holder
dies), or on SQLite an exclusive lock on a file beside the database (SQLite deployments are one
host). The others retry taking the lock each period, so a new holder takes over within one
period when the current one stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane_server.storage.db import Database
from agentplane_server.storage.errors import storage_unavailable

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x4147_504C  # "AGPL": one id for the whole deployment
JOB_RUNS = Counter(
    "agentplane_housekeeping_runs", "Housekeeping job runs, by job and outcome.", ["job", "outcome"]
)
ROWS_REMOVED = Counter(
    "agentplane_housekeeping_rows_removed",
    "Rows removed by housekeeping (retention, expiry), by job and table.",
    ["job", "table"],
)
IS_LEADER = Gauge(
    "agentplane_housekeeping_leader",
    "1 in the process that holds the housekeeping lock.",
    multiprocess_mode="max",
)

Job = Callable[[Database], Awaitable[dict[str, int]]]


@dataclass
class _Registered:
    name: str
    interval: float
    run: Job
    next_run: float = 0.0


class Housekeeping:
    """Runs registered jobs while this process holds the deployment lock."""

    def __init__(self, db: Database, lock_file: Path, tick: float = 1.0) -> None:
        self.db = db
        self.lock_file = lock_file
        self.tick = tick
        self._jobs: list[_Registered] = []
        self._task: asyncio.Task | None = None
        self._pg_connection: AsyncConnection | None = None
        self._file_handle: int | None = None
        self._outage = False  # one warning per database outage, not one per job and tick

    def add(self, name: str, interval: float, run: Job) -> None:
        """`run(db)` returns {table: rows removed}; it is called every `interval` seconds."""
        self._jobs.append(_Registered(name, interval, run))

    def start(self) -> None:
        if self._jobs and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._release()

    @property
    def is_leader(self) -> bool:
        return self._pg_connection is not None or self._file_handle is not None

    async def run_due(self, force: bool = False) -> None:
        """Run the jobs whose time has come (all of them with force)."""
        now = time.monotonic()
        for job in self._jobs:
            if not force and now < job.next_run:
                continue
            job.next_run = now + job.interval
            try:
                removed = await job.run(self.db)
            except Exception as exc:
                JOB_RUNS.labels(job.name, "error").inc()
                if storage_unavailable(exc) is None:
                    log.exception("housekeeping job failed", extra={"job": job.name})
                else:
                    self._database_away(exc)
                continue
            self._database_back()
            JOB_RUNS.labels(job.name, "ok").inc()
            for table, count in removed.items():
                if count:
                    ROWS_REMOVED.labels(job.name, table).inc(count)
                    log.info(
                        "housekeeping removed rows",
                        extra={"job": job.name, "table": table, "rows": count},
                    )

    async def _loop(self) -> None:
        while True:
            try:
                if await self._acquire():
                    await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if storage_unavailable(exc) is None:
                    log.exception("housekeeping loop error")
                else:
                    self._database_away(exc)
                await self._release()
            await asyncio.sleep(self.tick)

    def _database_away(self, exc: BaseException) -> None:
        if not self._outage:
            self._outage = True
            log.warning(
                "housekeeping paused: the database is unavailable; retrying every tick",
                extra={"error": type(exc).__name__},
            )

    def _database_back(self) -> None:
        if self._outage:
            self._outage = False
            log.info("housekeeping resumed: the database answers again")

    async def _acquire(self) -> bool:
        if self.is_leader:
            return True
        if self.db.is_sqlite:
            handle = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                return False
            self._file_handle = handle
        else:
            connection = None
            try:
                async with self.db.bounded():
                    connection = await self.db.engine.connect()
                    got = await connection.scalar(
                        sa.text("SELECT pg_try_advisory_lock(:id)"), {"id": ADVISORY_LOCK_ID}
                    )
                    await connection.commit()
            except Exception:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.invalidate()
                raise
            if not got:
                await connection.close()
                return False
            self._pg_connection = connection
        IS_LEADER.set(1)
        log.info("took the housekeeping lock")
        return True

    async def _release(self) -> None:
        if self._pg_connection is not None:
            # Closing the session releases its advisory lock, and discarding the connection
            # (not returning it to the pool) never waits on a database that stopped answering.
            with contextlib.suppress(Exception):
                await self._pg_connection.invalidate()
                await self._pg_connection.close()
            self._pg_connection = None
        if self._file_handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file_handle, fcntl.LOCK_UN)
                os.close(self._file_handle)
            self._file_handle = None
        IS_LEADER.set(0)
