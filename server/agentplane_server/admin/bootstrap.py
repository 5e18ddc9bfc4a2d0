"""First start: create the `default` project and an admin key, written to data_dir/admin.key
(or, with --bootstrap-admin-key FILE, the key in that file: a Kubernetes Secret, so that every
replica and every restart agree on it and no pod's disk holds it)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import sqlalchemy as sa

from agentplane_server.auth.keys import KEY_PREFIX, create_key
from agentplane_server.context import Role
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)
DEFAULT_PROJECT = "default"
MIN_GIVEN_KEY_LENGTH = 32


def read_given_key(path: Path) -> str:
    """The operator's bootstrap key; ValueError (one line) when it is not a usable key."""
    secret = path.read_text().strip()
    if (
        not secret.startswith(KEY_PREFIX)
        or len(secret) < MIN_GIVEN_KEY_LENGTH
        or secret.count("\n")
    ):
        raise ValueError(
            f"{path}: the bootstrap admin key must be one line starting with {KEY_PREFIX!r}, at "
            f"least {MIN_GIVEN_KEY_LENGTH} characters (e.g. {KEY_PREFIX} + `openssl rand -hex 32`)"
        )
    return secret


async def bootstrap(db: Database, admin_key_path: Path, given_key: Path | None = None) -> None:
    """Idempotent: does nothing once any project exists (also when another replica, starting at
    the same moment, created it first). With `given_key` the key in that file is registered and
    nothing is written to admin_key_path."""
    given = read_given_key(given_key) if given_key else None
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
                c, DEFAULT_PROJECT, Role.ADMIN, display_name="bootstrap admin key", secret=given
            )
    except sa.exc.IntegrityError:
        return  # another replica bootstrapped first
    if given_key:
        log.info(
            "created project 'default' with the given admin key",
            extra={"bootstrap_admin_key": str(given_key), "key_id": minted.key_id},
        )
        return
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
