"""The trust model: one score per agent from 0 to 1.

- Start: the project's trust_baseline (GovernanceSettings, default 0.5).
- Decay: between events the score moves toward the baseline exponentially, the distance
  halving every trust_decay_half_life (default 7 days):
      score(t) = baseline + (score(t0) - baseline) * 2 ** (-(t - t0) / half_life)
  Every read and every event starts from the decayed score. Housekeeping records the decay as
  a DECAY event at most once a day per agent.
- Events move the decayed score by a fixed fraction of the room left, so the score stays in
  0..1 without clamping and moves less the closer it already is to the end:
      up (fraction f):   score + f * (1 - score)
      down (fraction f): score - f * score
  EXECUTION_SUCCESS up 0.05, FEEDBACK_UP up 0.03, EXECUTION_FAILURE down 0.05, FEEDBACK_DOWN
  down 0.05, EXECUTION_ERROR down 0.10, OUTPUT_REJECTED down 0.15, EXECUTION_VIOLATION down
  0.30. MANUAL sets a value or adds a delta (clamped to 0..1).
- Tiers (fixed): UNTRUSTED < 0.2 <= LOW < 0.5 <= MEDIUM < 0.8 <= HIGH.

Every change is one row in governance_trust_events naming its cause, written in the same
transaction as the score, and bumps the project's trust_revision so every replica's in-memory
copy (which CheckPermission reads) picks it up within its poll interval.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.governance.v1 import trust_pb2
from agentplane_server.governance import store
from agentplane_server.governance.evaluate import trust_tier
from agentplane_server.storage.db import Database, now_us

DAY_US = 86_400_000_000
C = trust_pb2
UP, DOWN = 1, -1
STEPS: dict[int, tuple[int, float]] = {
    C.TRUST_EVENT_CAUSE_EXECUTION_SUCCESS: (UP, 0.05),
    C.TRUST_EVENT_CAUSE_FEEDBACK_UP: (UP, 0.03),
    C.TRUST_EVENT_CAUSE_EXECUTION_FAILURE: (DOWN, 0.05),
    C.TRUST_EVENT_CAUSE_FEEDBACK_DOWN: (DOWN, 0.05),
    C.TRUST_EVENT_CAUSE_EXECUTION_ERROR: (DOWN, 0.10),
    C.TRUST_EVENT_CAUSE_OUTPUT_REJECTED: (DOWN, 0.15),
    C.TRUST_EVENT_CAUSE_EXECUTION_VIOLATION: (DOWN, 0.30),
}
OUTCOME_CAUSE = {
    C.EXECUTION_OUTCOME_SUCCESS: C.TRUST_EVENT_CAUSE_EXECUTION_SUCCESS,
    C.EXECUTION_OUTCOME_FAILURE: C.TRUST_EVENT_CAUSE_EXECUTION_FAILURE,
    C.EXECUTION_OUTCOME_ERROR: C.TRUST_EVENT_CAUSE_EXECUTION_ERROR,
    C.EXECUTION_OUTCOME_VIOLATION: C.TRUST_EVENT_CAUSE_EXECUTION_VIOLATION,
}


@dataclass(frozen=True, slots=True)
class TrustState:
    """A stored score: its value at score_time_us (decay after that is computed)."""

    score: float
    score_time_us: int
    event_count: int
    update_time_us: int


def decayed(score: float, since_us: int, at_us: int, baseline: float, half_life_us: int) -> float:
    if at_us <= since_us or half_life_us <= 0:
        return score
    return baseline + (score - baseline) * 2.0 ** (-(at_us - since_us) / half_life_us)


def current(state: TrustState | None, at_us: int, baseline: float, half_life_us: int) -> float:
    if state is None:
        return baseline
    return min(
        1.0, max(0.0, decayed(state.score, state.score_time_us, at_us, baseline, half_life_us))
    )


def step(score: float, cause: int) -> float:
    direction, fraction = STEPS[cause]
    if direction == UP:
        return score + fraction * (1.0 - score)
    return score - fraction * score


def score_message(
    project_id: str,
    agent_id: str,
    state: TrustState | None,
    at_us: int,
    baseline: float,
    half_life_us: int,
) -> trust_pb2.TrustScore:
    score = current(state, at_us, baseline, half_life_us)
    message = trust_pb2.TrustScore(
        agent_id=agent_id,
        project_id=project_id,
        score=score,
        tier=trust_tier(score),
        baseline=baseline,
        event_count=state.event_count if state else 0,
    )
    if state is not None:
        message.update_time.FromMicroseconds(state.update_time_us)
    return message


def state_from_row(row: Any) -> TrustState:
    return TrustState(row.score, row.score_time_us, row.event_count, row.update_time_us)


def event_from_row(row: Any) -> trust_pb2.TrustEvent:
    event = trust_pb2.TrustEvent(
        event_id=row.event_id,
        project_id=row.project_id,
        agent_id=row.agent_id,
        cause=row.cause,
        delta=row.delta,
        score_after=row.score_after,
        action=row.action,
        decision_id=row.decision_id,
        request_id=row.request_id,
        feedback_id=row.feedback_id,
        actor=row.actor,
        comment=row.comment,
    )
    event.create_time.FromMicroseconds(row.create_time_us)
    return event


async def record_event(
    c: AsyncConnection,
    project_id: str,
    agent_id: str,
    cause: int,
    *,
    action: str = "",
    decision_id: str = "",
    request_id: str = "",
    feedback_id: str = "",
    actor: str = "",
    comment: str = "",
    set_score: float | None = None,
    add: float | None = None,
    at_us: int | None = None,
) -> tuple[trust_pb2.TrustScore, trust_pb2.TrustEvent]:
    """Apply one trust event in the caller's write transaction: the score (decayed to now) is
    moved by `cause` (or set / added to, for MANUAL), and the event is recorded."""
    now = at_us if at_us is not None else now_us()
    settings = store.settings_from_row(await store.get_project_row(c, project_id))
    # The revision first: its row lock serializes this project's trust writes, so the score
    # row below is read and written by one transaction at a time.
    revision = await store.bump_revision(c, project_id, "trust_revision")
    row = await store.get_trust_row(c, project_id, agent_id, lock=True)
    state = state_from_row(row) if row is not None else None
    before = current(state, now, settings.trust_baseline, settings.trust_half_life_us)
    if set_score is not None:
        after = set_score
    elif add is not None:
        after = before + add
    elif cause == C.TRUST_EVENT_CAUSE_DECAY:
        # The decay since the last event, recorded: the delta is measured from the stored
        # score rather than from the decayed one.
        after, before = before, (state.score if state else before)
    else:
        after = step(before, cause)
    after = min(1.0, max(0.0, after))
    count = (state.event_count if state else 0) + 1
    await store.upsert_trust_row(
        c,
        {
            "project_id": project_id,
            "agent_id": agent_id,
            "score": after,
            "score_time_us": now,
            "event_count": count,
            "update_time_us": now,
            "last_decay_event_us": (
                now
                if cause == C.TRUST_EVENT_CAUSE_DECAY or row is None
                else row.last_decay_event_us
            ),
            "revision": revision,
        },
    )
    values = {
        "event_id": f"tev_{secrets.token_hex(10)}",
        "project_id": project_id,
        "agent_id": agent_id,
        "cause": cause,
        "delta": after - before,
        "score_after": after,
        "action": action,
        "decision_id": decision_id,
        "request_id": request_id,
        "feedback_id": feedback_id,
        "actor": actor,
        "comment": comment,
        "create_time_us": now,
    }
    await store.insert_trust_event(c, values)
    new_state = TrustState(after, now, count, now)
    score = score_message(
        project_id, agent_id, new_state, now, settings.trust_baseline, settings.trust_half_life_us
    )
    return score, event_from_row(_Row(values))


class _Row:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def record_feedback_trust(
    c: AsyncConnection, project_id: str, agent_id: str, thumbs_up: bool, feedback_id: str
) -> None:
    """Move an agent's trust score for feedback on its answer (FeedbackService calls this in
    its own write transaction when feedback is created).

    thumbs_up=True records a FEEDBACK_UP event (score + 0.03 * (1 - score)); False records
    FEEDBACK_DOWN (score - 0.05 * score), both from the decayed score, with `feedback_id` on
    the event. Calling it again with the same feedback_id does nothing, so a retried feedback
    creation counts once. Other replicas see the new score within their poll interval.
    """
    if not agent_id:
        return
    if feedback_id and await store.feedback_event_exists(c, project_id, feedback_id):
        return
    cause = C.TRUST_EVENT_CAUSE_FEEDBACK_UP if thumbs_up else C.TRUST_EVENT_CAUSE_FEEDBACK_DOWN
    await record_event(c, project_id, agent_id, cause, feedback_id=feedback_id)


async def record_decay_events(
    db: Database, at_us: int | None = None, limit: int = 500
) -> dict[str, int]:
    """Housekeeping: a DECAY event for each agent whose last one is a day old and whose score
    has moved by decay since its last event (0.0001 or more)."""
    now = at_us if at_us is not None else now_us()
    async with db.write() as c:
        rows = await store.decay_candidates(c, now - DAY_US, limit)
        settings: dict[str, store.SettingsRow] = {}
        for row in rows:
            if row.project_id not in settings:
                settings[row.project_id] = store.settings_from_row(
                    await store.get_project_row(c, row.project_id)
                )
            s = settings[row.project_id]
            moved = current(state_from_row(row), now, s.trust_baseline, s.trust_half_life_us)
            if abs(moved - row.score) < 1e-4:
                await store.touch_decay(c, row.project_id, row.agent_id, now)
                continue
            await record_event(
                c, row.project_id, row.agent_id, C.TRUST_EVENT_CAUSE_DECAY, at_us=now
            )
    # Housekeeping counts removed rows; decay removes none (the events are in the log).
    return {}
