"""Governance storage (SQLAlchemy Core): project settings and revisions, policies, trust,
approvals, budget spend and the decision log."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.governance.v1 import decision_pb2
from agentplane_server.storage import tables
from agentplane_server.storage.queries import dialect_insert, insert_ignore, newest_first

GP = tables.governance_projects
POL = tables.governance_policies
TS = tables.governance_trust_scores
TE = tables.governance_trust_events
AP = tables.governance_approvals
BS = tables.governance_budget_spend
DL = tables.governance_decisions
DP = tables.governance_decision_policies

HOUR_US = 3_600_000_000


@dataclass(frozen=True, slots=True)
class SettingsRow:
    """GovernanceSettings values; DEFAULT_SETTINGS until a project changes them."""

    default_decision: int = decision_pb2.DECISION_DENY
    trust_baseline: float = 0.5
    trust_half_life_us: int = 7 * 24 * HOUR_US
    approval_expiry_us: int = 24 * HOUR_US
    decision_cache_ttl_us: int = 30_000_000
    version: int = 0
    update_time_us: int | None = None


DEFAULT_SETTINGS = SettingsRow()


def _lock(c: AsyncConnection, query: Any) -> Any:
    return query.with_for_update() if c.dialect.name == "postgresql" else query


# -- project settings and revisions ------------------------------------------------------------


def settings_from_row(row: Any) -> SettingsRow:
    if row is None:
        return DEFAULT_SETTINGS
    return SettingsRow(
        default_decision=row.default_decision,
        trust_baseline=row.trust_baseline,
        trust_half_life_us=row.trust_half_life_us,
        approval_expiry_us=row.approval_expiry_us,
        decision_cache_ttl_us=row.decision_cache_ttl_us,
        version=row.settings_version,
        update_time_us=row.settings_update_time_us,
    )


async def get_project_row(c: AsyncConnection, project_id: str, *, lock: bool = False) -> Any:
    query = sa.select(GP).where(GP.c.project_id == project_id)
    if lock:
        query = _lock(c, query)
    return (await c.execute(query)).first()


async def ensure_project_row(c: AsyncConnection, project_id: str) -> None:
    d = DEFAULT_SETTINGS
    await c.execute(
        dialect_insert(c, GP)
        .values(
            project_id=project_id,
            default_decision=d.default_decision,
            trust_baseline=d.trust_baseline,
            trust_half_life_us=d.trust_half_life_us,
            approval_expiry_us=d.approval_expiry_us,
            decision_cache_ttl_us=d.decision_cache_ttl_us,
            settings_version=0,
            settings_update_time_us=None,
            policy_revision=0,
            trust_revision=0,
        )
        .on_conflict_do_nothing()
    )


async def bump_revision(
    c: AsyncConnection, project_id: str, column: str, values: dict[str, Any] | None = None
) -> int:
    """Take the project's next policy or trust revision (and apply `values` to its row). The
    UPDATE holds the row lock until commit, so revisions commit in order and pollers that ask
    for `revision > last` miss nothing."""
    await ensure_project_row(c, project_id)
    col = GP.c[column]
    revision = (
        await c.execute(
            sa.update(GP)
            .where(GP.c.project_id == project_id)
            .values({column: col + 1, **(values or {})})
            .returning(col)
        )
    ).scalar()
    return int(revision)


async def revisions(c: AsyncConnection, project_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    rows = await c.execute(
        sa.select(GP.c.project_id, GP.c.policy_revision, GP.c.trust_revision).where(
            GP.c.project_id.in_(list(project_ids))
        )
    )
    return {r.project_id: (int(r.policy_revision), int(r.trust_revision)) for r in rows}


# -- policies ----------------------------------------------------------------------------------


async def all_policies(c: AsyncConnection, project_id: str) -> list[Any]:
    return list(await c.execute(sa.select(POL).where(POL.c.project_id == project_id)))


async def get_policy_row(
    c: AsyncConnection, project_id: str, policy_id: str, *, lock: bool = False
) -> Any:
    query = sa.select(POL).where(POL.c.project_id == project_id, POL.c.policy_id == policy_id)
    if lock:
        query = _lock(c, query)
    return (await c.execute(query)).first()


async def insert_policy(c: AsyncConnection, values: dict[str, Any]) -> bool:
    inserted = await c.execute(
        dialect_insert(c, POL).on_conflict_do_nothing().values(**values).returning(POL.c.version)
    )
    return inserted.first() is not None


async def update_policy(
    c: AsyncConnection, project_id: str, policy_id: str, values: dict[str, Any]
) -> None:
    await c.execute(
        sa.update(POL)
        .where(POL.c.project_id == project_id, POL.c.policy_id == policy_id)
        .values(**values)
    )


async def delete_policy(c: AsyncConnection, project_id: str, policy_id: str) -> None:
    await c.execute(
        sa.delete(POL).where(POL.c.project_id == project_id, POL.c.policy_id == policy_id)
    )


async def list_policies(
    c: AsyncConnection,
    project_id: str,
    effect: int,
    enabled: bool | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[Any]:
    query = sa.select(POL).where(POL.c.project_id == project_id)
    if effect:
        query = query.where(POL.c.effect == effect)
    if enabled is not None:
        query = query.where(POL.c.enabled == enabled)
    if after is not None:
        priority, policy_id = after
        query = query.where(
            sa.or_(
                POL.c.priority < priority,
                sa.and_(POL.c.priority == priority, POL.c.policy_id > policy_id),
            )
        )
    query = query.order_by(POL.c.priority.desc(), POL.c.policy_id).limit(limit)
    return list(await c.execute(query))


# -- trust -------------------------------------------------------------------------------------


async def get_trust_row(
    c: AsyncConnection, project_id: str, agent_id: str, *, lock: bool = False
) -> Any:
    query = sa.select(TS).where(TS.c.project_id == project_id, TS.c.agent_id == agent_id)
    if lock:
        query = _lock(c, query)
    return (await c.execute(query)).first()


async def upsert_trust_row(c: AsyncConnection, values: dict[str, Any]) -> None:
    insert = dialect_insert(c, TS).values(**values)
    keys = ("project_id", "agent_id")
    await c.execute(
        insert.on_conflict_do_update(
            index_elements=[TS.c.project_id, TS.c.agent_id],
            set_={k: insert.excluded[k] for k in values if k not in keys},
        )
    )


async def touch_decay(c: AsyncConnection, project_id: str, agent_id: str, now: int) -> None:
    await c.execute(
        sa.update(TS)
        .where(TS.c.project_id == project_id, TS.c.agent_id == agent_id)
        .values(last_decay_event_us=now)
    )


async def trust_rows(c: AsyncConnection, project_id: str, after_revision: int = -1) -> list[Any]:
    query = sa.select(TS).where(TS.c.project_id == project_id)
    if after_revision >= 0:
        query = query.where(TS.c.revision > after_revision)
    return list(await c.execute(query))


async def list_trust_rows(
    c: AsyncConnection,
    project_id: str,
    agent_ids: list[str],
    after: str | None,
    limit: int,
) -> list[Any]:
    query = sa.select(TS).where(TS.c.project_id == project_id)
    if agent_ids:
        query = query.where(TS.c.agent_id.in_(agent_ids))
    if after is not None:
        query = query.where(TS.c.agent_id > after)
    return list(await c.execute(query.order_by(TS.c.agent_id).limit(limit)))


async def insert_trust_event(c: AsyncConnection, values: dict[str, Any]) -> None:
    await c.execute(TE.insert().values(**values))


async def feedback_event_exists(c: AsyncConnection, project_id: str, feedback_id: str) -> bool:
    found = await c.scalar(
        sa.select(TE.c.event_id)
        .where(TE.c.project_id == project_id, TE.c.feedback_id == feedback_id)
        .limit(1)
    )
    return found is not None


async def list_trust_events(
    c: AsyncConnection,
    project_id: str,
    agent_id: str,
    cause: int,
    start_us: int | None,
    end_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[Any]:
    query = sa.select(TE).where(TE.c.project_id == project_id)
    if agent_id:
        query = query.where(TE.c.agent_id == agent_id)
    if cause:
        query = query.where(TE.c.cause == cause)
    if start_us is not None:
        query = query.where(TE.c.create_time_us >= start_us)
    if end_us is not None:
        query = query.where(TE.c.create_time_us < end_us)
    query = newest_first(query, TE.c.create_time_us, TE.c.event_id, after, limit)
    return list(await c.execute(query))


async def decay_candidates(c: AsyncConnection, before_us: int, limit: int) -> list[Any]:
    return list(
        await c.execute(
            sa.select(TS)
            .where(TS.c.last_decay_event_us < before_us)
            .order_by(TS.c.last_decay_event_us)
            .limit(limit)
        )
    )


# -- approvals ---------------------------------------------------------------------------------


async def insert_approval(c: AsyncConnection, values: dict[str, Any]) -> bool:
    inserted = await c.execute(
        dialect_insert(c, AP).on_conflict_do_nothing().values(**values).returning(AP.c.state)
    )
    return inserted.first() is not None


async def get_approval_row(
    c: AsyncConnection, project_id: str, approval_id: str, *, lock: bool = False
) -> Any:
    query = sa.select(AP).where(AP.c.project_id == project_id, AP.c.approval_id == approval_id)
    if lock:
        query = _lock(c, query)
    return (await c.execute(query)).first()


async def pending_approval(c: AsyncConnection, pending_key: str) -> Any:
    return (await c.execute(sa.select(AP).where(AP.c.pending_key == pending_key))).first()


async def update_approval(
    c: AsyncConnection, approval_id: str, values: dict[str, Any], **where: Any
) -> bool:
    query = sa.update(AP).where(AP.c.approval_id == approval_id).values(**values)
    for name, value in where.items():
        column = AP.c[name]
        query = query.where(column.is_(None) if value is None else column == value)
    return (await c.execute(query)).rowcount == 1


async def list_approvals(
    c: AsyncConnection,
    project_id: str,
    state: int,
    agent_id: str,
    policy_id: str,
    start_us: int | None,
    end_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
    now: int,
) -> list[Any]:
    from agentplane.governance.v1 import approval_pb2

    query = sa.select(AP).where(AP.c.project_id == project_id)
    pending = approval_pb2.APPROVAL_STATE_PENDING
    expired = approval_pb2.APPROVAL_STATE_EXPIRED
    # State as callers see it: a PENDING approval past expire_time is EXPIRED.
    if state == pending:
        query = query.where(AP.c.state == pending, AP.c.expire_time_us > now)
    elif state == expired:
        query = query.where(
            sa.or_(
                AP.c.state == expired, sa.and_(AP.c.state == pending, AP.c.expire_time_us <= now)
            )
        )
    elif state:
        query = query.where(AP.c.state == state)
    if agent_id:
        query = query.where(AP.c.agent_id == agent_id)
    if policy_id:
        query = query.where(AP.c.policy_id == policy_id)
    if start_us is not None:
        query = query.where(AP.c.create_time_us >= start_us)
    if end_us is not None:
        query = query.where(AP.c.create_time_us < end_us)
    query = newest_first(query, AP.c.create_time_us, AP.c.approval_id, after, limit)
    return list(await c.execute(query))


async def expire_approvals(c: AsyncConnection, now: int, limit: int) -> list[Any]:
    from agentplane.governance.v1 import approval_pb2

    rows = list(
        await c.execute(
            sa.select(AP.c.approval_id, AP.c.project_id)
            .where(AP.c.state == approval_pb2.APPROVAL_STATE_PENDING, AP.c.expire_time_us <= now)
            .limit(limit)
        )
    )
    for row in rows:
        await c.execute(
            sa.update(AP)
            .where(
                AP.c.approval_id == row.approval_id,
                AP.c.state == approval_pb2.APPROVAL_STATE_PENDING,
            )
            .values(state=approval_pb2.APPROVAL_STATE_EXPIRED, pending_key=None, update_time_us=now)
        )
    return rows


# -- budgets -----------------------------------------------------------------------------------


async def add_spend(c: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    insert = dialect_insert(c, BS)
    await c.execute(
        insert.on_conflict_do_update(
            index_elements=[BS.c.project_id, BS.c.budget_key, BS.c.bucket_us],
            set_={"amount": BS.c.amount + insert.excluded.amount},
        ),
        rows,
    )


async def read_spend(
    c: AsyncConnection, project_id: str, keys: list[str], since_us: int
) -> list[Any]:
    return list(
        await c.execute(
            sa.select(BS.c.budget_key, BS.c.bucket_us, BS.c.amount).where(
                BS.c.project_id == project_id,
                BS.c.budget_key.in_(keys),
                BS.c.bucket_us > since_us,
            )
        )
    )


async def prune_spend(c: AsyncConnection, before_us: int) -> int:
    return (await c.execute(sa.delete(BS).where(BS.c.bucket_us < before_us))).rowcount or 0


# -- decision log ------------------------------------------------------------------------------


async def insert_decisions(
    c: AsyncConnection, rows: list[dict[str, Any]], policy_rows: list[dict[str, Any]]
) -> None:
    """Insert a batch; a decision already stored (a retried batch whose first commit was not
    acknowledged) is skipped, so each decision is stored exactly once."""
    if c.dialect.name == "sqlite":
        # One multi-row statement instead of executemany: aiosqlite runs the driver in a
        # thread that must take the GIL back after every row it steps, and under load the
        # event loop holds the GIL for a whole switch interval each time (measured: a 1,000
        # row executemany went from 25 ms idle to seconds while serving).
        await _sqlite_insert_many(c, DL, rows)
        if policy_rows:
            await _sqlite_insert_many(c, DP, policy_rows)
        return
    await c.execute(insert_ignore(c, DL), rows)
    if policy_rows:
        await c.execute(insert_ignore(c, DP), policy_rows)


_SQLITE_MAX_PARAMS = 30_000


async def _sqlite_insert_many(c: AsyncConnection, table: sa.Table, rows: list[dict]) -> None:
    names = [col.name for col in table.columns]
    json_columns = {col.name for col in table.columns if isinstance(col.type, sa.JSON)}
    per_statement = max(1, _SQLITE_MAX_PARAMS // len(names))
    placeholder = "(" + ",".join("?" * len(names)) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params: list[Any] = []
        for row in chunk:
            for name in names:
                value = row.get(name)
                if name in json_columns and value is not None:
                    value = json.dumps(value)
                params.append(value)
        sql = (
            f"INSERT INTO {table.name} ({','.join(names)}) VALUES "
            f"{','.join([placeholder] * len(chunk))} ON CONFLICT DO NOTHING"
        )
        await c.exec_driver_sql(sql, tuple(params))


async def get_decision_row(c: AsyncConnection, project_id: str, decision_id: str) -> Any:
    return (
        await c.execute(
            sa.select(DL).where(DL.c.project_id == project_id, DL.c.decision_id == decision_id)
        )
    ).first()


async def list_decisions(
    c: AsyncConnection,
    project_id: str,
    *,
    agent_id: str,
    kind: int,
    decision: int,
    verdict: int,
    action: str,
    policy_id: str,
    start_us: int | None,
    end_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[Any]:
    query = sa.select(DL.c.record, DL.c.create_time_us, DL.c.decision_id).where(
        DL.c.project_id == project_id
    )
    if agent_id:
        query = query.where(DL.c.agent_id == agent_id)
    if kind:
        query = query.where(DL.c.kind == kind)
    if decision:
        query = query.where(DL.c.decision == decision)
    if verdict:
        query = query.where(DL.c.verdict == verdict)
    if action:
        query = query.where(DL.c.action == action)
    if policy_id:
        query = query.where(
            sa.exists().where(
                DP.c.project_id == DL.c.project_id,
                DP.c.policy_id == policy_id,
                DP.c.decision_id == DL.c.decision_id,
            )
        )
    if start_us is not None:
        query = query.where(DL.c.create_time_us >= start_us)
    if end_us is not None:
        query = query.where(DL.c.create_time_us < end_us)
    query = newest_first(query, DL.c.create_time_us, DL.c.decision_id, after, limit)
    return list(await c.execute(query))


# -- request ids (hot-path variant of storage.idempotency) -------------------------------------

K = tables.idempotency_keys


async def prior_response(c: AsyncConnection, project_id: str, method: str, request_id: str) -> Any:
    return (
        await c.execute(
            sa.select(K.c.request_hash, K.c.response).where(
                K.c.project_id == project_id, K.c.method == method, K.c.request_id == request_id
            )
        )
    ).first()


async def remember_response(
    c: AsyncConnection,
    project_id: str,
    method: str,
    request_id: str,
    request_hash: str,
    response: bytes,
    now: int,
) -> bool:
    """Store the first response for a request id; False when another call stored one first."""
    inserted = await c.execute(
        dialect_insert(c, K)
        .on_conflict_do_nothing()
        .values(
            project_id=project_id,
            method=method,
            request_id=request_id,
            request_hash=request_hash,
            response=response,
            create_time_us=now,
        )
        .returning(K.c.request_id)
    )
    return inserted.first() is not None


async def set_decision_charges(
    c: AsyncConnection, project_id: str, decision_id: str, charges: list
) -> None:
    await c.execute(
        sa.update(DL)
        .where(DL.c.project_id == project_id, DL.c.decision_id == decision_id)
        .values(charges=charges)
    )
