"""The database: an async engine chosen by URL, transactions, and migrations at start."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from agentplane_server.storage import tables

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


def migrate(url: str, revision: str = "heads") -> None:
    """Apply the Alembic migrations up to `revision` (idempotent)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = sync_url(url)
    command.upgrade(config, revision)


class Database:
    """An async engine plus the two kinds of transaction the stores use.

    SQLite: writes take the database lock at BEGIN (BEGIN IMMEDIATE), so read-modify-write
    transactions never deadlock on lock upgrade; WAL lets readers run beside the writer; reads
    run statement by statement (no BEGIN).
    PostgreSQL: READ COMMITTED plus row locks (UPDATE ... RETURNING) in the stores.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        options: dict = {}
        if self.is_sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            self._configure_sqlite(self.engine)

    @staticmethod
    def _configure_sqlite(engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # Let the "begin" hook below emit BEGIN itself (the documented aiosqlite recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
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

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection, connection.begin():
            yield connection

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            await connection.execution_options(agentplane_write=True)
            async with connection.begin():
                yield connection

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
