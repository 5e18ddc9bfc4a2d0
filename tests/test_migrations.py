"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import database_url_for
from sqlalchemy import create_engine

from agentplane_server.storage.db import migrate, sync_url
from agentplane_server.storage.tables import metadata


def test_migrations_match_the_declared_tables(backend, postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = database_url_for(backend, postgres) or f"sqlite:///{tmp_path / 'm.db'}"
    migrate(url)
    migrate(url)  # idempotent
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []
