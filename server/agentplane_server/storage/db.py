"""The database: an async engine chosen by URL, transactions, and migrations at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from agentplane_server.storage import tables
from agentplane_server.storage.errors import StorageTimeout, describe, storage_unavailable

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def now_us() -> int:
    return time.time_ns() // 1000


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (Alembic runs synchronously)."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def migrate(url: str, revision: str = "heads", *, timeout: float = 5.0) -> None:
    """Apply the Alembic migrations up to `revision` (idempotent). `timeout` bounds connecting
    (and SQLite's wait for a lock), so an unreachable database fails instead of hanging."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = sync_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        config.attributes["connect_args"] = {"timeout": timeout}
    else:
        config.attributes["connect_args"] = {"connect_timeout": _whole_seconds(timeout)}
    command.upgrade(config, revision)


class DatabaseUnreachable(Exception):
    """The database stayed unreachable for the whole start-up timeout."""


async def retry_while_unavailable(
    attempt: Callable[[], Awaitable[None]], url: str, give_up_after: float
) -> None:
    """Run `attempt` until it succeeds, retrying with backoff (0.5 s doubling to 5 s) while the
    database is unavailable, for up to `give_up_after` seconds; one log line per failed
    attempt. Other errors propagate at once."""
    where = make_url(url).render_as_string(hide_password=True)
    deadline = time.monotonic() + give_up_after
    delay = 0.5
    for number in range(1, 1_000_000):
        try:
            await attempt()
            return
        except Exception as exc:
            if storage_unavailable(exc) is None:
                raise
            error = describe(exc)
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseUnreachable(
                    f"the database at {where} could not be reached within "
                    f"{give_up_after:g} s: {error}"
                ) from None
            delay = min(delay, left)
            log.warning(
                "the database cannot be reached; retrying",
                extra={"attempt": number, "retry_in_s": round(delay, 2), "error": error},
            )
        await asyncio.sleep(delay)
        delay = min(5.0, delay * 2)


def _whole_seconds(timeout: float) -> int:
    return max(1, math.ceil(timeout))  # libpq's connect_timeout is whole seconds, 0 = forever


class Database:
    """An async engine plus the two kinds of transaction the stores use.

    SQLite: writes take the database lock at BEGIN (BEGIN IMMEDIATE), so read-modify-write
    transactions never deadlock on lock upgrade; WAL lets readers run beside the writer; reads
    run statement by statement (no BEGIN).
    PostgreSQL: READ COMMITTED plus row locks (UPDATE ... RETURNING) in the stores.

    `timeout` (seconds) bounds every wait on the database, so that an outage answers
    UNAVAILABLE (storage/errors.py) well within a client's deadline instead of hanging:
    SQLite's busy timeout (waiting for another writer's lock); PostgreSQL's connect timeout,
    pool checkout timeout and server-side statement_timeout. A PostgreSQL server that stops
    answering (hung, SIGSTOP) enforces no statement_timeout, so each transaction is also
    bounded on this side, at twice the timeout (checkout and connect, then statements).
    """

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.timeout = timeout
        options: dict = {}
        if self.is_sqlite:
            options["connect_args"] = {"timeout": timeout}
        else:
            settings = f"-c statement_timeout={int(timeout * 1000)}"
            given = make_url(self.url).query.get("options")
            options.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                pool_timeout=timeout,
                connect_args={
                    "connect_timeout": _whole_seconds(timeout),
                    "options": f"{given} {settings}" if given else settings,
                },
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            self._configure_sqlite(self.engine, timeout)
        # The same engine (pool, events) with the write option set once, rather than on each
        # connection at every write (a round trip through the async adapter per transaction).
        self._write_engine = self.engine.execution_options(agentplane_write=True)

    @staticmethod
    def _configure_sqlite(engine: AsyncEngine, timeout: float) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # Let the "begin" hook below emit BEGIN itself (the documented aiosqlite recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
            # Reads run without BEGIN: each statement is its own snapshot, as under
            # PostgreSQL's READ COMMITTED, and a read costs no extra round trip. Writes take the
            # lock up front. The raw cursor skips SQLAlchemy's statement machinery.
            if connection.get_execution_options().get("agentplane_write"):
                cursor = connection.connection.dbapi_connection.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                cursor.close()

    def bounded(self) -> contextlib.AbstractAsyncContextManager:
        """The client-side bound of one transaction (PostgreSQL only: cancelling an aiosqlite
        call mid-transaction could leave SQLite's write lock held, and a local file does not
        hang the way a server can)."""
        if self.is_sqlite:
            return contextlib.nullcontext()
        return _deadline(2 * self.timeout)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.bounded(), self.engine.connect() as connection, connection.begin():
            yield connection

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self.bounded(), self._write_engine.connect() as connection, connection.begin():
            yield connection

    async def probe(self) -> None:
        """One cheap round trip; raises when the database is unavailable."""
        async with self.read() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def make_durable(self) -> None:
        """Make every transaction committed so far survive a machine crash. PostgreSQL commits
        are durable already (synchronous_commit); SQLite in WAL mode with synchronous=NORMAL
        syncs its WAL only at checkpoints, so sync the WAL and the database file here."""
        if not self.is_sqlite:
            return
        path = make_url(self.url).database
        if path and path != ":memory:":
            await asyncio.to_thread(_fsync_files, [path, f"{path}-wal"])

    async def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret shared by every replica (created on first use)."""
        async with self.read() as connection:
            value = await connection.scalar(
                sa.select(tables.server_secrets.c.value).where(tables.server_secrets.c.name == name)
            )
        if value is not None:
            return bytes(value)
        try:
            async with self.write() as connection:
                await connection.execute(
                    tables.server_secrets.insert().values(
                        name=name, value=secrets.token_bytes(size), create_time_us=now_us()
                    )
                )
        except sa.exc.IntegrityError:
            pass  # another replica created it first
        return await self.secret(name, size)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _fsync_files(paths: list[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # no WAL right now: everything is in the database file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# A psycopg query interrupted by cancellation asks the server to cancel it and waits up to
# 10 s for the answer, which a stopped server never sends; cancelling again makes psycopg
# close the connection at once. So the deadline cancels, then cancels again shortly after.
_RECANCEL_AFTER = 0.2
_MAX_CANCELS = 3


@contextlib.asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """Cancel the block after `seconds` and raise StorageTimeout in its place (asyncio.timeout
    cancels only once; see _RECANCEL_AFTER)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    fired = 0

    def expire() -> None:
        nonlocal fired, handle
        fired += 1
        task.cancel()
        if fired < _MAX_CANCELS:
            handle = loop.call_later(_RECANCEL_AFTER, expire)

    handle = loop.call_later(seconds, expire)
    try:
        yield
    except asyncio.CancelledError:
        handle.cancel()
        if fired:
            for _ in range(fired):
                task.uncancel()
            fired = 0
            if task.cancelling() == 0:  # ours alone, not the caller's
                raise StorageTimeout(f"the database did not answer within {seconds:g} s") from None
        raise
    finally:
        handle.cancel()
        for _ in range(fired):  # fired but the block finished anyway
            task.uncancel()
