"""Admin storage: projects, API keys (never their secrets) and audit events."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format, struct_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.admin.v1 import api_key_pb2, audit_event_pb2, project_pb2
from agentplane_server.storage import tables
from agentplane_server.storage.db import now_us
from agentplane_server.storage.queries import newest_first

P = tables.projects
K = tables.api_keys
E = tables.audit_events


def project_from_row(row: Any) -> project_pb2.Project:
    project = project_pb2.Project(
        project_id=row.project_id,
        display_name=row.display_name,
        labels=row.labels or {},
        etag=str(row.version),
    )
    json_format.ParseDict(row.settings or {}, project.settings)
    project.create_time.FromMicroseconds(row.create_time_us)
    project.update_time.FromMicroseconds(row.update_time_us)
    return project


def key_state(row: Any, now: int) -> int:
    if row.revoke_time_us is not None:
        return api_key_pb2.API_KEY_STATE_REVOKED
    if row.expire_time_us is not None and row.expire_time_us <= now:
        return api_key_pb2.API_KEY_STATE_EXPIRED
    return api_key_pb2.API_KEY_STATE_ACTIVE


def key_from_row(row: Any) -> api_key_pb2.ApiKey:
    key = api_key_pb2.ApiKey(
        key_id=row.key_id,
        project_id=row.project_id,
        display_name=row.display_name,
        role=row.role,
        agent_id=row.agent_id,
        state=key_state(row, now_us()),
        prefix=row.prefix,
        requests_per_second=int(row.rate_limit_rps or 0),
        creator_key_id=row.creator_key_id,
    )
    for field, value in (
        ("expire_time", row.expire_time_us),
        ("last_used_time", row.last_used_time_us),
        ("revoke_time", row.revoke_time_us),
        ("create_time", row.create_time_us),
    ):
        if value is not None:
            getattr(key, field).FromMicroseconds(value)
    return key


def event_from_row(row: Any) -> audit_event_pb2.AuditEvent:
    event = audit_event_pb2.AuditEvent(
        event_id=row.event_id,
        project_id=row.project_id,
        actor=audit_event_pb2.AuditActor(
            key_id=row.actor_key_id,
            subject=row.actor_subject,
            project_id=row.actor_project_id,
            role=row.actor_role,
            agent_id=row.actor_agent_id,
        ),
        action=row.action,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        request_id=row.request_id,
    )
    if row.details is not None:
        details = struct_pb2.Struct()
        details.update(row.details)
        event.details.CopyFrom(details)
    event.create_time.FromMicroseconds(row.create_time_us)
    return event


class AdminStore:
    # -- projects -----------------------------------------------------------------------------

    async def get_project(self, c: AsyncConnection, project_id: str) -> project_pb2.Project | None:
        row = (await c.execute(sa.select(P).where(P.c.project_id == project_id))).first()
        return None if row is None else project_from_row(row)

    async def insert_project(self, c: AsyncConnection, values: dict[str, Any]) -> bool:
        if await self.get_project(c, values["project_id"]) is not None:
            return False
        await c.execute(P.insert().values(**values))
        return True

    async def list_projects(
        self, c: AsyncConnection, only: str | None, after: str | None, limit: int
    ) -> list[project_pb2.Project]:
        query = sa.select(P).order_by(P.c.project_id).limit(limit)
        if only is not None:
            query = query.where(P.c.project_id == only)
        if after is not None:
            query = query.where(P.c.project_id > after)
        return [project_from_row(r) for r in await c.execute(query)]

    async def update_project(
        self, c: AsyncConnection, project_id: str, values: dict[str, Any], expected: int | None
    ) -> bool:
        query = (
            sa.update(P)
            .where(P.c.project_id == project_id)
            .values(**values, version=P.c.version + 1, update_time_us=now_us())
        )
        if expected is not None:
            query = query.where(P.c.version == expected)
        return (await c.execute(query)).rowcount == 1

    async def project_holds_data(self, c: AsyncConnection, project_id: str) -> bool:
        found = await c.scalar(
            sa.select(tables.sessions.c.session_id)
            .where(tables.sessions.c.project_id == project_id)
            .limit(1)
        )
        return found is not None

    async def delete_project(
        self, c: AsyncConnection, project_id: str, expected: int | None
    ) -> bool:
        query = sa.delete(P).where(P.c.project_id == project_id)
        if expected is not None:
            query = query.where(P.c.version == expected)
        if (await c.execute(query)).rowcount != 1:
            return False
        # Everything the project owns goes with it: every table with a project_id column, so a
        # table added later cannot be forgotten here.
        for table in reversed(tables.metadata.sorted_tables):
            if table is not P and "project_id" in table.c:
                await c.execute(sa.delete(table).where(table.c.project_id == project_id))
        return True

    # -- API keys -----------------------------------------------------------------------------

    async def get_key(
        self, c: AsyncConnection, project_id: str, key_id: str
    ) -> api_key_pb2.ApiKey | None:
        row = (
            await c.execute(sa.select(K).where(K.c.project_id == project_id, K.c.key_id == key_id))
        ).first()
        return None if row is None else key_from_row(row)

    async def list_keys(
        self,
        c: AsyncConnection,
        project_id: str,
        *,
        role: int,
        agent_id: str,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[api_key_pb2.ApiKey]:
        query = sa.select(K).where(K.c.project_id == project_id)
        if role:
            query = query.where(K.c.role == role)
        if agent_id:
            query = query.where(K.c.agent_id == agent_id)
        query = newest_first(query, K.c.create_time_us, K.c.key_id, after, limit)
        return [key_from_row(r) for r in await c.execute(query)]

    async def revoke_key(self, c: AsyncConnection, project_id: str, key_id: str) -> None:
        await c.execute(
            sa.update(K)
            .where(K.c.project_id == project_id, K.c.key_id == key_id, K.c.revoke_time_us.is_(None))
            .values(revoke_time_us=now_us())
        )

    async def count_active_keys(self, c: AsyncConnection, project_id: str | None, role: int) -> int:
        """Active keys of `role`, in one project or (None) in all."""
        now = now_us()
        query = (
            sa.select(sa.func.count())
            .select_from(K)
            .where(
                K.c.role == role,
                K.c.revoke_time_us.is_(None),
                sa.or_(K.c.expire_time_us.is_(None), K.c.expire_time_us > now),
            )
        )
        if project_id is not None:
            query = query.where(K.c.project_id == project_id)
        return int(await c.scalar(query) or 0)

    # -- audit --------------------------------------------------------------------------------

    async def add_event(self, c: AsyncConnection, values: dict[str, Any]) -> None:
        await c.execute(E.insert().values(**values))

    async def list_events(
        self,
        c: AsyncConnection,
        project_id: str,
        *,
        actions: list[str],
        actor: str,
        resource_type: str,
        resource_id: str,
        after_us: int | None,
        before_us: int | None,
        position: tuple[int, str] | None,
        limit: int,
    ) -> list[audit_event_pb2.AuditEvent]:
        query = sa.select(E).where(E.c.project_id == project_id)
        if actions:
            query = query.where(E.c.action.in_(actions))
        if actor:
            query = query.where(sa.or_(E.c.actor_key_id == actor, E.c.actor_subject == actor))
        if resource_type:
            query = query.where(E.c.resource_type == resource_type)
        if resource_id:
            query = query.where(E.c.resource_id == resource_id)
        if after_us is not None:
            query = query.where(E.c.create_time_us >= after_us)
        if before_us is not None:
            query = query.where(E.c.create_time_us < before_us)
        query = newest_first(query, E.c.create_time_us, E.c.event_id, position, limit)
        return [event_from_row(r) for r in await c.execute(query)]
