"""Registry storage: agents, their card facets, and the per-project event stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as pb
from agentplane_server.registry.cards import CAPABILITY_BITS, capability_mask, facets
from agentplane_server.storage import tables

A = tables.registry_agents
F = tables.registry_agent_facets
P = tables.registry_projects
E = tables.registry_events

ACTIVE = agent_pb2.AGENT_STATUS_ACTIVE
STALE = agent_pb2.AGENT_STATUS_STALE


def _insert_ignore(c: AsyncConnection, table: sa.Table) -> Any:
    dialect = postgresql if c.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def agent_from_row(row: Any, grace_us: int, now: int) -> agent_pb2.Agent:
    """The Agent as callers see it. A lease that ran out is STALE at once, even before the
    housekeeping job records it (and sends the STALE event)."""
    status, remove_time = row.status, row.remove_time_us
    if status == ACTIVE and row.lease_expire_time_us <= now:
        status, remove_time = STALE, row.lease_expire_time_us + grace_us
    agent = agent_pb2.Agent(
        agent_id=row.agent_id,
        project_id=row.project_id,
        card=agent_pb2.AgentCard.FromString(row.card),
        status=status,
        etag=str(row.version),
    )
    agent.lease_duration.FromMicroseconds(row.lease_duration_us)
    agent.lease_expire_time.FromMicroseconds(row.lease_expire_time_us)
    if status == STALE and remove_time is not None:
        agent.remove_time.FromMicroseconds(remove_time)
    agent.last_heartbeat_time.FromMicroseconds(row.last_heartbeat_time_us)
    agent.create_time.FromMicroseconds(row.create_time_us)
    agent.update_time.FromMicroseconds(row.update_time_us)
    return agent


def card_columns(card: agent_pb2.AgentCard) -> dict[str, Any]:
    return {
        "card": card.SerializeToString(),
        "framework": card.framework,
        "sdk_language": card.sdk_language,
        "capabilities": capability_mask(card),
    }


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    type: int
    removal_reason: int
    agent: agent_pb2.Agent
    previous: agent_pb2.Agent | None
    event_time_us: int


class RegistryStore:
    async def get_row(
        self, c: AsyncConnection, project_id: str, agent_id: str, *, lock: bool = False
    ) -> Any:
        query = sa.select(A).where(A.c.project_id == project_id, A.c.agent_id == agent_id)
        if lock and c.dialect.name == "postgresql":
            query = query.with_for_update()
        return (await c.execute(query)).first()

    async def insert(self, c: AsyncConnection, values: dict[str, Any]) -> bool:
        inserted = await c.execute(_insert_ignore(c, A).values(**values).returning(A.c.version))
        return inserted.first() is not None

    async def update(
        self,
        c: AsyncConnection,
        project_id: str,
        agent_id: str,
        values: dict[str, Any],
        expected_version: int | None = None,
    ) -> bool:
        query = (
            sa.update(A)
            .where(A.c.project_id == project_id, A.c.agent_id == agent_id)
            .values(**values)
        )
        if expected_version is not None:
            query = query.where(A.c.version == expected_version)
        return (await c.execute(query)).rowcount == 1

    async def delete(self, c: AsyncConnection, project_id: str, agent_id: str) -> None:
        for table in (A, F):
            await c.execute(
                sa.delete(table).where(
                    table.c.project_id == project_id, table.c.agent_id == agent_id
                )
            )

    async def replace_facets(
        self, c: AsyncConnection, project_id: str, agent_id: str, card: agent_pb2.AgentCard
    ) -> None:
        await c.execute(sa.delete(F).where(F.c.project_id == project_id, F.c.agent_id == agent_id))
        rows = [
            {"project_id": project_id, "agent_id": agent_id, "kind": k, "value": v}
            for k, v in sorted(facets(card))
        ]
        if rows:
            await c.execute(F.insert(), rows)

    async def next_seq(self, c: AsyncConnection, project_id: str) -> int:
        """The project's next event number. The UPDATE holds the counter row's lock until
        commit (SQLite: the write lock), so events commit in sequence order."""
        bump = (
            sa.update(P)
            .where(P.c.project_id == project_id)
            .values(event_seq=P.c.event_seq + 1)
            .returning(P.c.event_seq)
        )
        seq = (await c.execute(bump)).scalar()
        if seq is None:
            await c.execute(_insert_ignore(c, P).values(project_id=project_id, event_seq=0))
            seq = (await c.execute(bump)).scalar()
        assert seq is not None
        return int(seq)

    async def add_event(
        self,
        c: AsyncConnection,
        project_id: str,
        event_type: int,
        agent: agent_pb2.Agent,
        previous: agent_pb2.Agent | None,
        now: int,
        removal_reason: int = 0,
    ) -> int:
        seq = await self.next_seq(c, project_id)
        await c.execute(
            E.insert().values(
                project_id=project_id,
                seq=seq,
                agent_id=agent.agent_id,
                type=event_type,
                removal_reason=removal_reason,
                agent=agent.SerializeToString(),
                previous=previous.SerializeToString() if previous is not None else None,
                event_time_us=now,
            )
        )
        return seq

    async def current_seq(self, c: AsyncConnection, project_id: str) -> int:
        seq = await c.scalar(sa.select(P.c.event_seq).where(P.c.project_id == project_id))
        return int(seq or 0)

    async def seqs(self, c: AsyncConnection, project_ids: list[str]) -> dict[str, int]:
        rows = await c.execute(
            sa.select(P.c.project_id, P.c.event_seq).where(P.c.project_id.in_(project_ids))
        )
        return {r.project_id: int(r.event_seq) for r in rows}

    async def events_after(
        self, c: AsyncConnection, project_id: str, after_seq: int, limit: int
    ) -> list[StoredEvent]:
        rows = await c.execute(
            sa.select(E)
            .where(E.c.project_id == project_id, E.c.seq > after_seq)
            .order_by(E.c.seq)
            .limit(limit)
        )
        return [
            StoredEvent(
                seq=r.seq,
                type=r.type,
                removal_reason=r.removal_reason,
                agent=agent_pb2.Agent.FromString(r.agent),
                previous=agent_pb2.Agent.FromString(r.previous) if r.previous else None,
                event_time_us=r.event_time_us,
            )
            for r in rows
        ]

    async def all_rows(self, c: AsyncConnection, project_id: str) -> list[Any]:
        return list(
            await c.execute(sa.select(A).where(A.c.project_id == project_id).order_by(A.c.agent_id))
        )

    async def list_rows(
        self,
        c: AsyncConnection,
        project_id: str,
        where: pb.AgentFilter,
        after: str | None,
        limit: int,
        now: int,
    ) -> list[Any]:
        query = sa.select(A).where(A.c.project_id == project_id)
        if where.agent_ids:
            query = query.where(A.c.agent_id.in_(list(where.agent_ids)))

        def has_facet(kind: str, value: str) -> Any:
            return sa.exists().where(
                F.c.project_id == A.c.project_id,
                F.c.agent_id == A.c.agent_id,
                F.c.kind == kind,
                F.c.value == value,
            )

        if where.skill_id:
            query = query.where(has_facet("skill", where.skill_id))
        if where.skill_tag:
            query = query.where(has_facet("tag", where.skill_tag))
        if where.extension_uri:
            query = query.where(has_facet("ext", where.extension_uri))
        for key, value in sorted(where.labels.items()):
            query = query.where(has_facet("label", f"{key}={value}"))
        if where.capabilities:
            mask = 0
            for capability in where.capabilities:
                mask |= CAPABILITY_BITS[capability]
            query = query.where(A.c.capabilities.op("&")(mask) == mask)
        # Status as callers see it: an ACTIVE row whose lease ran out is STALE.
        if where.status == ACTIVE:
            query = query.where(A.c.status == ACTIVE, A.c.lease_expire_time_us > now)
        elif where.status == STALE:
            query = query.where(sa.or_(A.c.status == STALE, A.c.lease_expire_time_us <= now))
        if where.framework:
            query = query.where(A.c.framework == where.framework)
        if where.sdk_language:
            query = query.where(A.c.sdk_language == where.sdk_language)
        if after is not None:
            query = query.where(A.c.agent_id > after)
        return list(await c.execute(query.order_by(A.c.agent_id).limit(limit)))

    # -- housekeeping -------------------------------------------------------------------------

    async def expired_leases(self, c: AsyncConnection, now: int, limit: int) -> list[Any]:
        return list(
            await c.execute(
                sa.select(A)
                .where(A.c.status == ACTIVE, A.c.lease_expire_time_us <= now)
                .order_by(A.c.lease_expire_time_us)
                .limit(limit)
            )
        )

    async def due_removals(self, c: AsyncConnection, now: int, limit: int) -> list[Any]:
        return list(
            await c.execute(
                sa.select(A)
                .where(A.c.status == STALE, A.c.remove_time_us <= now)
                .order_by(A.c.remove_time_us)
                .limit(limit)
            )
        )

    async def prune_events(self, c: AsyncConnection, before_us: int) -> int:
        result = await c.execute(sa.delete(E).where(E.c.event_time_us < before_us))
        return result.rowcount or 0
