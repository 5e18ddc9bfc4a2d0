"""Per-project retention of sessions, traces, feedback, governance decisions and audit events
(ProjectSettings.retention), run by the deployment's one housekeeping loop.

What expires, per the contract (admin/v1/project.proto RetentionSettings):
- sessions: a session whose last change (update_time) is older than `sessions`, with its
  messages and its agent list;
- traces: a trace whose latest span was stored (update_time) longer ago than `traces`, with its
  spans, agents and models. A trace goes as a whole once every one of its spans has expired,
  so a stored summary never disagrees with its spans;
- feedback: a feedback created longer ago than `feedback`, with its categories;
- decisions: a decision log record created longer ago than `decisions`, with its
  decision_policies rows. Trust events follow the same retention: the contract gives them no
  setting of their own and they are the decision log's counterpart for trust (the score, its
  event_count and update_time are stored on the score row, so removing old events changes no
  score). A FEEDBACK_UP/DOWN event is kept while its feedback exists, because it is what makes
  a replaced rating count once (governance.trust.record_feedback_trust);
- audit_events: an audit event created longer ago than `audit_events`.
Rows are deleted in batches of BATCH, each in its own short transaction, and every DELETE
repeats the age condition, so a record that changed after it was picked is kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format

from agentplane.admin.v1 import project_pb2
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

BATCH = 1000


def retention_us(settings: dict[str, Any] | None) -> tuple[int, int, int, int, int]:
    """(sessions, traces, feedback, decisions, audit_events) retention in microseconds; 0 keeps
    forever."""
    parsed = project_pb2.ProjectSettings()
    try:
        json_format.ParseDict(settings or {}, parsed, ignore_unknown_fields=True)
    except json_format.ParseError:
        log.warning("unreadable project settings; retention skipped")
        return 0, 0, 0, 0, 0
    retention = parsed.retention
    return (
        max(0, retention.sessions.ToMicroseconds()),
        max(0, retention.traces.ToMicroseconds()),
        max(0, retention.feedback.ToMicroseconds()),
        max(0, retention.decisions.ToMicroseconds()),
        max(0, retention.audit_events.ToMicroseconds()),
    )


async def apply_retention(db: Database) -> dict[str, int]:
    """The housekeeping job: {table: rows removed}."""
    removed: Counter[str] = Counter()
    now = now_us()
    async with db.read() as c:
        projects = (
            await c.execute(sa.select(tables.projects.c.project_id, tables.projects.c.settings))
        ).all()
    for project_id, settings in projects:
        sessions, traces, feedback, decisions, audit_events = retention_us(settings)
        if sessions:
            await _expire(
                db,
                project_id,
                now - sessions,
                tables.sessions,
                tables.sessions.c.session_id,
                tables.sessions.c.update_time_us,
                [(tables.messages, None), (tables.session_agents, None)],
                removed,
            )
        if traces:
            await _expire(
                db,
                project_id,
                now - traces,
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
        if feedback:
            await _expire(
                db,
                project_id,
                now - feedback,
                tables.feedback,
                tables.feedback.c.feedback_id,
                tables.feedback.c.create_time_us,
                [(tables.feedback_categories, None)],
                removed,
            )
        if decisions:
            await _expire(
                db,
                project_id,
                now - decisions,
                tables.governance_decisions,
                tables.governance_decisions.c.decision_id,
                tables.governance_decisions.c.create_time_us,
                [(tables.governance_decision_policies, None)],
                removed,
            )
            events, feedback_rows = tables.governance_trust_events, tables.feedback
            await _expire(
                db,
                project_id,
                now - decisions,
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
        if audit_events:
            await _expire(
                db,
                project_id,
                now - audit_events,
                tables.audit_events,
                tables.audit_events.c.event_id,
                tables.audit_events.c.create_time_us,
                [],
                removed,
            )
    return dict(removed)


async def _expire(
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
