"""Deleting expired rows for per-project retention (ProjectSettings.retention); each service
says what its records are (service/retention.py), the runtime's housekeeping job runs them.

Rows are deleted in batches of BATCH, each in its own short transaction, and every DELETE
repeats the age condition, so a record that changed after it was picked is kept.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from agentplane_server.storage.db import Database

BATCH = 1000


async def expire_rows(
    db: Database,
    project_id: str,
    cutoff_us: int,
    table: sa.Table,
    key: sa.Column,
    age: sa.Column,
    dependents: list[tuple[sa.Table, sa.Column | None]],
    removed: Counter[str],
    keep: sa.ColumnElement[bool] | None = None,
) -> None:
    """Delete `table` rows of the project older than the cutoff, except those `keep` holds for,
    then their dependents' rows (same project and key; those with an age column only when
    older than the cutoff too)."""
    expired = [table.c.project_id == project_id, age < cutoff_us]
    if keep is not None:
        expired.append(~keep)
    while True:
        async with db.write() as c:
            picked = list(
                await c.scalars(sa.select(key).where(*expired).order_by(age).limit(BATCH))
            )
            if not picked:
                return
            deleted = list(
                await c.scalars(sa.delete(table).where(*expired, key.in_(picked)).returning(key))
            )
            removed[table.name] += len(deleted)
            for dependent, dependent_age in dependents:
                if not deleted:
                    break
                query = sa.delete(dependent).where(
                    dependent.c.project_id == project_id, dependent.c[key.name].in_(deleted)
                )
                if dependent_age is not None:
                    query = query.where(dependent_age < cutoff_us)
                removed[dependent.name] += (await c.execute(query)).rowcount
        if len(picked) < BATCH:
            return
