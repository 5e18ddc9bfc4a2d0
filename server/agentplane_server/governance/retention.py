"""Retention of governance decisions (ProjectSettings.retention.decisions): a decision log
record created longer ago than the setting goes, with its decision_policies rows.

Trust events follow the same retention: the contract gives them no setting of their own and they
are the decision log's counterpart for trust (the score, its event_count and update_time are
stored on the score row, so removing old events changes no score). A FEEDBACK_UP/DOWN event is
kept while its feedback exists, because it is what makes a replaced rating count once
(governance.trust.record_feedback_trust).
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa

from agentplane.admin.v1 import project_pb2
from agentplane_server.runtime import cutoff_us
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database
from agentplane_server.storage.retention import expire_rows


async def expire_decisions(
    db: Database,
    project_id: str,
    retention: project_pb2.RetentionSettings,
    now: int,
    removed: Counter[str],
) -> None:
    cutoff = cutoff_us(now, retention.decisions)
    if cutoff is None:
        return
    await expire_rows(
        db,
        project_id,
        cutoff,
        tables.governance_decisions,
        tables.governance_decisions.c.decision_id,
        tables.governance_decisions.c.create_time_us,
        [(tables.governance_decision_policies, None)],
        removed,
    )
    events, feedback_rows = tables.governance_trust_events, tables.feedback
    await expire_rows(
        db,
        project_id,
        cutoff,
        events,
        events.c.event_id,
        events.c.create_time_us,
        [],
        removed,
        keep=sa.exists().where(
            feedback_rows.c.project_id == events.c.project_id,
            feedback_rows.c.feedback_id == events.c.feedback_id,
        ),
    )
