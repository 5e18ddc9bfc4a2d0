"""Retention of audit events (ProjectSettings.retention.audit_events): an audit event created
longer ago than the setting goes."""

from __future__ import annotations

from collections import Counter

from agentplane.admin.v1 import project_pb2
from agentplane_server.runtime import cutoff_us
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database
from agentplane_server.storage.retention import expire_rows


async def expire_audit_events(
    db: Database,
    project_id: str,
    retention: project_pb2.RetentionSettings,
    now: int,
    removed: Counter[str],
) -> None:
    cutoff = cutoff_us(now, retention.audit_events)
    if cutoff is None:
        return
    await expire_rows(
        db,
        project_id,
        cutoff,
        tables.audit_events,
        tables.audit_events.c.event_id,
        tables.audit_events.c.create_time_us,
        [],
        removed,
    )
