"""Query shapes every store uses: newest-first keyset pages and dialect-specific inserts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def newest_first(
    query: sa.Select,
    time_column: sa.ColumnElement,
    id_column: sa.ColumnElement,
    after: tuple[int, str] | None,
    limit: int,
) -> sa.Select:
    """Order by (time, id) descending and start after the page token's (time, id) position."""
    if after is not None:
        time_us, last_id = after
        query = query.where(
            sa.or_(time_column < time_us, sa.and_(time_column == time_us, id_column < last_id))
        )
    return query.order_by(time_column.desc(), id_column.desc()).limit(limit)


def dialect_insert(c: AsyncConnection, table: sa.Table) -> Any:
    """INSERT in the connection's dialect, for ON CONFLICT clauses."""
    dialect = postgresql if c.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_ignore(c: AsyncConnection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING."""
    return dialect_insert(c, table).on_conflict_do_nothing()
