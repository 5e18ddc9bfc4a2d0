"""Session storage: sessions, their messages, and the agents that took part (SQLAlchemy Core)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format, struct_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.common.v1 import usage_pb2
from agentplane.session.v1 import session_pb2
from agentplane_server.storage import tables
from agentplane_server.storage.db import now_us
from agentplane_server.storage.queries import insert_ignore, newest_first

S = tables.sessions
M = tables.messages
A = tables.session_agents


def _struct(value: dict | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def struct_to_json(struct: struct_pb2.Struct, present: bool) -> dict | None:
    return json_format.MessageToDict(struct) if present else None


def session_from_row(row: Any) -> session_pb2.Session:
    session = session_pb2.Session(
        session_id=row.session_id,
        project_id=row.project_id,
        title=row.title,
        user_id=row.user_id,
        agent_ids=row.agent_ids or (),
        labels=row.labels or {},
        metadata=_struct(row.metadata),
        state=row.state,
        parent_session_id=row.parent_session_id,
        forked_at_sequence=row.forked_at_sequence,
        message_count=row.message_count,
        last_sequence=row.last_sequence,
        usage=usage_pb2.Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_micros=row.cost_micros,
        ),
        etag=str(row.version),
    )
    session.create_time.FromMicroseconds(row.create_time_us)
    session.update_time.FromMicroseconds(row.update_time_us)
    return session


def message_from_row(row: Any) -> session_pb2.Message:
    message = session_pb2.Message(
        message_id=row.message_id,
        session_id=row.session_id,
        sequence=row.sequence,
        role=row.role,
        content=row.content,
        agent_id=row.agent_id,
        trace_id=row.trace_id,
        span_id=row.span_id,
        tool_calls=[session_pb2.ToolCall(**call) for call in row.tool_calls or ()],
        tool_call_id=row.tool_call_id,
        model=row.model,
        usage=usage_pb2.Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_micros=row.cost_micros,
            cost_currency=row.cost_currency,
        ),
        metadata=_struct(row.metadata),
    )
    message.create_time.FromMicroseconds(row.create_time_us)
    return message


def message_row(
    project_id: str,
    session_id: str,
    sequence: int,
    message_id: str,
    message: session_pb2.MessageInput | session_pb2.Message,
    create_time_us: int,
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "session_id": session_id,
        "sequence": sequence,
        "message_id": message_id,
        "role": message.role,
        "content": message.content,
        "agent_id": message.agent_id,
        "trace_id": message.trace_id,
        "span_id": message.span_id,
        "tool_calls": [
            {"tool_call_id": c.tool_call_id, "name": c.name, "arguments_json": c.arguments_json}
            for c in message.tool_calls
        ]
        or None,
        "tool_call_id": message.tool_call_id,
        "model": message.model,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
        "cost_micros": message.usage.cost_micros,
        "cost_currency": message.usage.cost_currency,
        "metadata": struct_to_json(message.metadata, message.HasField("metadata")),
        "create_time_us": create_time_us,
    }


@dataclass(frozen=True, slots=True)
class SessionFilter:
    user_id: str = ""
    agent_id: str = ""
    state: int = 0
    parent_session_id: str = ""
    create_after_us: int | None = None
    create_before_us: int | None = None


class SessionStore:
    """Every method takes the transaction to run in; logic decides read or write."""

    async def get(
        self, c: AsyncConnection, project_id: str, session_id: str
    ) -> session_pb2.Session | None:
        row = (await c.execute(_GET, {"p_project": project_id, "p_session": session_id})).first()
        return None if row is None else session_from_row(row)

    async def exists(self, c: AsyncConnection, project_id: str, session_id: str) -> bool:
        found = await c.scalar(_EXISTS, {"p_project": project_id, "p_session": session_id})
        return found is not None

    async def insert(self, c: AsyncConnection, values: dict[str, Any]) -> bool:
        """Insert a session row; False when the id is taken."""
        # RETURNING rather than rowcount: psycopg reports no rowcount for ON CONFLICT inserts.
        inserted = await c.execute(insert_ignore(c, S).values(**values).returning(S.c.version))
        return inserted.first() is not None

    async def add_agents(
        self,
        c: AsyncConnection,
        project_id: str,
        session_id: str,
        known: Sequence[str],
        first_sequence_by_agent: dict[str, int],
    ) -> list[str]:
        """Record agents new to the session; returns the session's agent ids in order."""
        new = {a: n for a, n in first_sequence_by_agent.items() if a not in known}
        if not new:
            return list(known)
        agent_ids = [*known, *new]
        await c.execute(
            _SET_AGENTS,
            {"p_project": project_id, "p_session": session_id, "p_agents": agent_ids},
        )
        await c.execute(
            insert_ignore(c, A),
            [
                {
                    "project_id": project_id,
                    "session_id": session_id,
                    "agent_id": agent_id,
                    "first_sequence": sequence,
                }
                for agent_id, sequence in new.items()
            ],
        )
        return agent_ids

    async def list(
        self,
        c: AsyncConnection,
        project_id: str,
        where: SessionFilter,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[session_pb2.Session]:
        query = sa.select(S).where(S.c.project_id == project_id)
        if where.user_id:
            query = query.where(S.c.user_id == where.user_id)
        if where.state:
            query = query.where(S.c.state == where.state)
        if where.parent_session_id:
            query = query.where(S.c.parent_session_id == where.parent_session_id)
        if where.create_after_us is not None:
            query = query.where(S.c.create_time_us >= where.create_after_us)
        if where.create_before_us is not None:
            query = query.where(S.c.create_time_us < where.create_before_us)
        if where.agent_id:
            query = query.where(
                sa.exists().where(
                    A.c.project_id == S.c.project_id,
                    A.c.session_id == S.c.session_id,
                    A.c.agent_id == where.agent_id,
                )
            )
        query = newest_first(query, S.c.create_time_us, S.c.session_id, after, limit)
        return [session_from_row(r) for r in await c.execute(query)]

    async def update(
        self,
        c: AsyncConnection,
        project_id: str,
        session_id: str,
        values: dict[str, Any],
        expected_version: int | None,
    ) -> bool:
        """Apply `values` and bump the version; False when missing or the version differs."""
        query = (
            sa.update(S)
            .where(S.c.project_id == project_id, S.c.session_id == session_id)
            .values(**values, version=S.c.version + 1, update_time_us=now_us())
        )
        if expected_version is not None:
            query = query.where(S.c.version == expected_version)
        return (await c.execute(query)).rowcount == 1

    async def delete(
        self, c: AsyncConnection, project_id: str, session_id: str, expected_version: int | None
    ) -> bool:
        query = sa.delete(S).where(S.c.project_id == project_id, S.c.session_id == session_id)
        if expected_version is not None:
            query = query.where(S.c.version == expected_version)
        if (await c.execute(query)).rowcount != 1:
            return False
        for table in (M, A):
            await c.execute(
                sa.delete(table).where(
                    table.c.project_id == project_id, table.c.session_id == session_id
                )
            )
        return True

    async def reserve_sequences(
        self,
        c: AsyncConnection,
        project_id: str,
        session_id: str,
        count: int,
        usage: usage_pb2.Usage,
        expected_last_sequence: int | None,
    ) -> tuple[int, list[str]] | None:
        """Take `count` sequence numbers for an append and add its usage to the totals.

        Returns the new last_sequence and the session's agent ids, or None when the session is
        missing, closed, or not at expected_last_sequence. The UPDATE takes the session's row
        lock (PostgreSQL) or runs under the write lock (SQLite), so concurrent appends get
        disjoint, gap-free ranges.
        """
        params = {
            "p_project": project_id,
            "p_session": session_id,
            "p_count": count,
            "p_input": usage.input_tokens,
            "p_output": usage.output_tokens,
            "p_cost": usage.cost_micros,
            "p_now": now_us(),
        }
        if expected_last_sequence is None:
            row = (await c.execute(_RESERVE, params)).first()
        else:
            params["p_expected"] = expected_last_sequence
            row = (await c.execute(_RESERVE_IF_AT, params)).first()
        return None if row is None else (row.last_sequence, list(row.agent_ids or ()))

    async def state_and_last_sequence(
        self, c: AsyncConnection, project_id: str, session_id: str
    ) -> tuple[int, int] | None:
        row = (
            await c.execute(
                sa.select(S.c.state, S.c.last_sequence).where(
                    S.c.project_id == project_id, S.c.session_id == session_id
                )
            )
        ).first()
        return None if row is None else (row.state, row.last_sequence)

    async def insert_messages(self, c: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        # One row (the common append) runs as a single execute, not an executemany.
        await c.execute(_INSERT_MESSAGES, rows[0] if len(rows) == 1 else rows)

    async def list_messages(
        self,
        c: AsyncConnection,
        project_id: str,
        session_id: str,
        after_sequence: int,
        limit: int,
        up_to_sequence: int | None = None,
    ) -> list[session_pb2.Message]:
        query = sa.select(M).where(
            M.c.project_id == project_id,
            M.c.session_id == session_id,
            M.c.sequence > after_sequence,
        )
        if up_to_sequence is not None:
            query = query.where(M.c.sequence <= up_to_sequence)
        rows = await c.execute(query.order_by(M.c.sequence).limit(limit))
        return [message_from_row(r) for r in rows]

    async def usage_breakdown(
        self, c: AsyncConnection, project_id: str, session_id: str, column: sa.Column
    ) -> list[tuple[str, int, usage_pb2.Usage]]:
        rows = await c.execute(
            sa.select(
                column,
                sa.func.count(),
                sa.func.sum(M.c.input_tokens),
                sa.func.sum(M.c.output_tokens),
                sa.func.sum(M.c.cost_micros),
            )
            .where(M.c.project_id == project_id, M.c.session_id == session_id)
            .group_by(column)
            .order_by(column)
        )
        return [
            (
                key,
                int(count),
                usage_pb2.Usage(
                    input_tokens=int(i or 0), output_tokens=int(o or 0), cost_micros=int(m or 0)
                ),
            )
            for key, count, i, o, m in rows
        ]


# The hot-path statements, built once: SQLAlchemy then reuses their compiled form and cache key
# instead of rebuilding both on every call.
_KEY = (S.c.project_id == sa.bindparam("p_project"), S.c.session_id == sa.bindparam("p_session"))
_GET = sa.select(S).where(*_KEY)
_EXISTS = sa.select(S.c.version).where(*_KEY)
_SET_AGENTS = sa.update(S).where(*_KEY).values(agent_ids=sa.bindparam("p_agents", type_=sa.JSON))
_RESERVE = (
    sa.update(S)
    .where(*_KEY, S.c.state != session_pb2.SESSION_STATE_CLOSED)
    .values(
        last_sequence=S.c.last_sequence + sa.bindparam("p_count"),
        message_count=S.c.message_count + sa.bindparam("p_count"),
        input_tokens=S.c.input_tokens + sa.bindparam("p_input"),
        output_tokens=S.c.output_tokens + sa.bindparam("p_output"),
        cost_micros=S.c.cost_micros + sa.bindparam("p_cost"),
        version=S.c.version + 1,
        update_time_us=sa.bindparam("p_now"),
    )
    .returning(S.c.last_sequence, S.c.agent_ids)
)
_RESERVE_IF_AT = _RESERVE.where(S.c.last_sequence == sa.bindparam("p_expected"))
_INSERT_MESSAGES = M.insert()
