"""Retention of traces (ProjectSettings.retention.traces): a trace whose latest span was stored
(update_time) longer ago than the setting goes, with its spans, agents and models. A trace goes
as a whole once every one of its spans has expired, so a stored summary never disagrees with
its spans."""

from __future__ import annotations

from collections import Counter

from agentplane.admin.v1 import project_pb2
from agentplane_server.runtime import cutoff_us
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database
from agentplane_server.storage.retention import expire_rows


async def expire_traces(
    db: Database,
    project_id: str,
    retention: project_pb2.RetentionSettings,
    now: int,
    removed: Counter[str],
) -> None:
    cutoff = cutoff_us(now, retention.traces)
    if cutoff is None:
        return
    await expire_rows(
        db,
        project_id,
        cutoff,
        tables.traces,
        tables.traces.c.trace_id,
        tables.traces.c.update_time_us,
        [
            (tables.spans, tables.spans.c.create_time_us),
            (tables.trace_agents, None),
            (tables.trace_models, None),
        ],
        removed,
    )
