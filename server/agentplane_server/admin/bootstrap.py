"""First start: create the `default` project and an admin key, written to data_dir/admin.key."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import sqlalchemy as sa

from agentplane_server.auth.keys import create_key
from agentplane_server.context import Role
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)
DEFAULT_PROJECT = "default"


async def bootstrap(db: Database, admin_key_path: Path) -> None:
    """Idempotent: does nothing once any project exists (also when another replica, starting at
    the same moment, created it first)."""
    try:
        async with db.write() as c:
            if await c.scalar(sa.select(sa.func.count()).select_from(tables.projects)):
                return
            now = now_us()
            await c.execute(
                tables.projects.insert().values(
                    project_id=DEFAULT_PROJECT,
                    display_name="Default project",
                    settings={},
                    labels={},
                    version=1,
                    create_time_us=now,
                    update_time_us=now,
                )
            )
            minted = await create_key(
                c, DEFAULT_PROJECT, Role.ADMIN, display_name="bootstrap admin key"
            )
    except sa.exc.IntegrityError:
        return  # another replica bootstrapped first
    # Written only once the key is committed. Created 0600 from the start: the secret is never
    # readable by others, not even between creation and a chmod.
    admin_key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(admin_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(minted.secret + "\n")
    log.info(
        "created project 'default' and an admin key",
        extra={"admin_key_path": str(admin_key_path), "key_id": minted.key_id},
    )
