"""Retention of sessions (ProjectSettings.retention.sessions): a session whose last change
(update_time) is older than the setting goes, with its messages and its agent list."""

from __future__ import annotations

from collections import Counter

from agentplane.admin.v1 import project_pb2
from agentplane_server.runtime import cutoff_us
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database
from agentplane_server.storage.retention import expire_rows


async def expire_sessions(
    db: Database,
    project_id: str,
    retention: project_pb2.RetentionSettings,
    now: int,
    removed: Counter[str],
) -> None:
    cutoff = cutoff_us(now, retention.sessions)
    if cutoff is None:
        return
    await expire_rows(
        db,
        project_id,
        cutoff,
        tables.sessions,
        tables.sessions.c.session_id,
        tables.sessions.c.update_time_us,
        [(tables.messages, None), (tables.session_agents, None)],
        removed,
    )
