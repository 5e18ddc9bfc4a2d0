"""Retention of feedback (ProjectSettings.retention.feedback): a feedback created longer ago
than the setting goes, with its categories."""

from __future__ import annotations

from collections import Counter

from agentplane.admin.v1 import project_pb2
from agentplane_server.runtime import cutoff_us
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database
from agentplane_server.storage.retention import expire_rows


async def expire_feedback(
    db: Database,
    project_id: str,
    retention: project_pb2.RetentionSettings,
    now: int,
    removed: Counter[str],
) -> None:
    cutoff = cutoff_us(now, retention.feedback)
    if cutoff is None:
        return
    await expire_rows(
        db,
        project_id,
        cutoff,
        tables.feedback,
        tables.feedback.c.feedback_id,
        tables.feedback.c.create_time_us,
        [(tables.feedback_categories, None)],
        removed,
    )
