"""SessionService behaviour: ids, ordering, idempotency, etags, forks and watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

from google.protobuf import struct_pb2

from agentplane.common.v1 import usage_pb2
from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane_server.authz import acting_agent
from agentplane_server.context import Principal
from agentplane_server.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    etag_mismatch,
)
from agentplane_server.pagination import PageTokens
from agentplane_server.resources import new_id, parse_etag
from agentplane_server.session.events import SessionEvents
from agentplane_server.session.store import (
    SessionFilter,
    SessionStore,
    message_from_row,
    message_row,
    struct_to_json,
)
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us
from agentplane_server.storage.idempotency import run_idempotent

MAX_METADATA_BYTES = 64 * 1024
SESSIONS_PAGE = (50, 500)  # default, maximum
MESSAGES_PAGE = (100, 1000)
WATCH_BATCH = 500
MUTABLE_PATHS = {"title", "user_id", "labels", "metadata", "state"}


def session_not_found(session_id: str) -> NotFound:
    return NotFound(
        f"session {session_id!r} not found",
        reason=ErrorReason.ERROR_REASON_SESSION_NOT_FOUND,
        metadata={"session_id": session_id},
    )


def check_metadata(field: str, struct: struct_pb2.Struct) -> None:
    if struct.ByteSize() > MAX_METADATA_BYTES:
        raise InvalidArgument.field(field, f"must be at most {MAX_METADATA_BYTES} bytes")


class SessionLogic:
    def __init__(
        self,
        db: Database,
        events: SessionEvents,
        page_tokens: PageTokens,
        watch_poll_interval: float,
        shutdown: asyncio.Event,
    ) -> None:
        self.db = db
        self.store = SessionStore()
        self.events = events
        self.page_tokens = page_tokens
        self.watch_poll_interval = watch_poll_interval
        self.shutdown = shutdown

    # -- sessions ---------------------------------------------------------------------------

    async def create(self, who: Principal, request: pb.CreateSessionRequest) -> session_pb2.Session:
        check_metadata("metadata", request.metadata)
        agent_id = acting_agent(who, request.agent_id)
        session_id = request.session_id or new_id("ses")

        async def work(c) -> pb.CreateSessionResponse:  # type: ignore[no-untyped-def]
            now = now_us()
            inserted = await self.store.insert(
                c,
                {
                    "project_id": who.project_id,
                    "session_id": session_id,
                    "title": request.title,
                    "user_id": request.user_id,
                    "labels": dict(request.labels),
                    "metadata": struct_to_json(request.metadata, request.HasField("metadata")),
                    "state": session_pb2.SESSION_STATE_ACTIVE,
                    "parent_session_id": "",
                    "forked_at_sequence": 0,
                    "message_count": 0,
                    "last_sequence": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_micros": 0,
                    "version": 1,
                    "agent_ids": [],
                    "create_time_us": now,
                    "update_time_us": now,
                },
            )
            if not inserted:
                raise AlreadyExists(
                    f"session {session_id!r} already exists",
                    reason=ErrorReason.ERROR_REASON_SESSION_ALREADY_EXISTS,
                    metadata={"session_id": session_id},
                )
            if agent_id:
                await self.store.add_agents(c, who.project_id, session_id, [], {agent_id: 0})
            session = await self.store.get(c, who.project_id, session_id)
            return pb.CreateSessionResponse(session=session)

        response, _ = await run_idempotent(
            self.db,
            who.project_id,
            "CreateSession",
            request.request_id,
            request,
            pb.CreateSessionResponse,
            work,
        )
        return response.session

    async def get(self, who: Principal, session_id: str) -> session_pb2.Session:
        async with self.db.read() as c:
            session = await self.store.get(c, who.project_id, session_id)
        if session is None:
            raise session_not_found(session_id)
        return session

    async def list(
        self, who: Principal, request: pb.ListSessionsRequest
    ) -> pb.ListSessionsResponse:
        where = SessionFilter(
            user_id=request.user_id,
            agent_id=request.agent_id,
            state=request.state,
            parent_session_id=request.parent_session_id,
            create_after_us=(
                request.create_time.start_time.ToMicroseconds()
                if request.create_time.HasField("start_time")
                else None
            ),
            create_before_us=(
                request.create_time.end_time.ToMicroseconds()
                if request.create_time.HasField("end_time")
                else None
            ),
        )
        filters = _filter_key(who, where)
        page = self.page_tokens.page("ListSessions", request, filters, SESSIONS_PAGE)
        after = (int(page.position[0]), str(page.position[1])) if page.position else None
        async with self.db.read() as c:
            rows = await self.store.list(c, who.project_id, where, after, page.fetch)
        sessions, token = page.finish(
            rows, lambda s: [s.create_time.ToMicroseconds(), s.session_id]
        )
        return pb.ListSessionsResponse(sessions=sessions, next_page_token=token)

    async def update(self, who: Principal, request: pb.UpdateSessionRequest) -> session_pb2.Session:
        session = request.session
        if not session.session_id:
            raise InvalidArgument.field("session.session_id", "is required")
        paths = list(request.update_mask.paths)
        bad = [p for p in paths if p not in MUTABLE_PATHS]
        if not paths or bad:
            raise InvalidArgument.field(
                "update_mask",
                f"paths must be among {sorted(MUTABLE_PATHS)}; got {bad or 'none'}",
            )
        values: dict = {}
        for path in paths:
            if path == "labels":
                values["labels"] = dict(session.labels)
            elif path == "metadata":
                check_metadata("session.metadata", session.metadata)
                values["metadata"] = struct_to_json(session.metadata, session.HasField("metadata"))
            elif path == "state":
                values["state"] = session.state or session_pb2.SESSION_STATE_ACTIVE
            else:
                values[path] = getattr(session, path)
        expected = parse_etag(session.etag, "session.etag")
        async with self.db.write() as c:
            if not await self.store.update(c, who.project_id, session.session_id, values, expected):
                if await self.store.exists(c, who.project_id, session.session_id):
                    raise etag_mismatch("session", session.session_id)
                raise session_not_found(session.session_id)
            updated = await self.store.get(c, who.project_id, session.session_id)
        self.events.notify(who.project_id, session.session_id)
        assert updated is not None
        return updated

    async def delete(self, who: Principal, request: pb.DeleteSessionRequest) -> None:
        expected = parse_etag(request.etag)
        async with self.db.write() as c:
            if not await self.store.delete(c, who.project_id, request.session_id, expected):
                if await self.store.exists(c, who.project_id, request.session_id):
                    raise etag_mismatch("session", request.session_id)
                raise session_not_found(request.session_id)
        self.events.notify(who.project_id, request.session_id)

    # -- messages ---------------------------------------------------------------------------

    async def append(
        self, who: Principal, request: pb.AppendMessagesRequest
    ) -> pb.AppendMessagesResponse:
        inputs = list(request.messages)
        for index, message in enumerate(inputs):
            check_metadata(f"messages[{index}].metadata", message.metadata)
            message.agent_id = acting_agent(who, message.agent_id, f"messages[{index}].agent_id")
        total = usage_pb2.Usage(
            input_tokens=sum(m.usage.input_tokens for m in inputs),
            output_tokens=sum(m.usage.output_tokens for m in inputs),
            cost_micros=sum(m.usage.cost_micros for m in inputs),
        )
        expected = (
            request.expected_last_sequence if request.HasField("expected_last_sequence") else None
        )
        project_id, session_id = who.project_id, request.session_id

        async def work(c) -> pb.AppendMessagesResponse:  # type: ignore[no-untyped-def]
            reserved = await self.store.reserve_sequences(
                c, project_id, session_id, len(inputs), total, expected
            )
            if reserved is None:
                raise await self._append_refusal(c, project_id, session_id)
            last, known_agents = reserved
            first = last - len(inputs) + 1
            now = now_us()
            rows = [
                message_row(project_id, session_id, first + i, new_id("msg"), m, now)
                for i, m in enumerate(inputs)
            ]
            await self.store.insert_messages(c, rows)
            first_by_agent: dict[str, int] = {}
            for row in rows:
                if row["agent_id"]:
                    first_by_agent.setdefault(row["agent_id"], row["sequence"])
            await self.store.add_agents(c, project_id, session_id, known_agents, first_by_agent)
            # The response is what was just written; no need to read it back.
            stored = [message_from_row(SimpleNamespace(**row)) for row in rows]
            return pb.AppendMessagesResponse(messages=stored, last_sequence=last)

        # The request is hashed after agent ids were resolved, so a request id reused by
        # another agent counts as a different request.
        response, appended = await run_idempotent(
            self.db,
            project_id,
            "AppendMessages",
            request.request_id,
            request,
            pb.AppendMessagesResponse,
            work,
        )
        if appended:
            self.events.notify(project_id, session_id)
        return response

    async def _append_refusal(self, c, project_id: str, session_id: str) -> Exception:  # type: ignore[no-untyped-def]
        found = await self.store.state_and_last_sequence(c, project_id, session_id)
        if found is None:
            return session_not_found(session_id)
        state, last_sequence = found
        if state == session_pb2.SESSION_STATE_CLOSED:
            return FailedPrecondition(
                f"session {session_id!r} is closed",
                reason=ErrorReason.ERROR_REASON_SESSION_CLOSED,
                metadata={"session_id": session_id},
            )
        return Aborted(
            f"session {session_id!r} is at sequence {last_sequence}, not expected_last_sequence",
            reason=ErrorReason.ERROR_REASON_SEQUENCE_CONFLICT,
            metadata={"session_id": session_id, "last_sequence": str(last_sequence)},
        )

    async def list_messages(
        self, who: Principal, request: pb.ListMessagesRequest
    ) -> pb.ListMessagesResponse:
        filters = {"project": who.project_id, "session": request.session_id}
        page = self.page_tokens.page("ListMessages", request, filters, MESSAGES_PAGE)
        after = int(page.position[0]) if page.position else request.after_sequence
        async with self.db.read() as c:
            if not await self.store.exists(c, who.project_id, request.session_id):
                raise session_not_found(request.session_id)
            rows = await self.store.list_messages(
                c, who.project_id, request.session_id, after, page.fetch
            )
        messages, token = page.finish(rows, lambda m: [m.sequence])
        return pb.ListMessagesResponse(messages=messages, next_page_token=token)

    async def fork(self, who: Principal, request: pb.ForkSessionRequest) -> session_pb2.Session:
        project_id = who.project_id
        new_session_id = request.new_session_id or new_id("ses")

        async def work(c) -> pb.ForkSessionResponse:  # type: ignore[no-untyped-def]
            parent = await self.store.get(c, project_id, request.session_id)
            if parent is None:
                raise session_not_found(request.session_id)
            if request.at_sequence > parent.last_sequence:
                raise NotFound(
                    f"session {request.session_id!r} has no message {request.at_sequence} "
                    f"(last is {parent.last_sequence})",
                    reason=ErrorReason.ERROR_REASON_SEQUENCE_NOT_FOUND,
                    metadata={"sequence": str(request.at_sequence)},
                )
            copied = await self.store.list_messages(
                c, project_id, request.session_id, 0, request.at_sequence
            )
            now = now_us()
            usage = usage_pb2.Usage(
                input_tokens=sum(m.usage.input_tokens for m in copied),
                output_tokens=sum(m.usage.output_tokens for m in copied),
                cost_micros=sum(m.usage.cost_micros for m in copied),
            )
            inserted = await self.store.insert(
                c,
                {
                    "project_id": project_id,
                    "session_id": new_session_id,
                    "title": request.title or parent.title,
                    "user_id": parent.user_id,
                    "labels": dict(parent.labels),
                    "metadata": struct_to_json(parent.metadata, parent.HasField("metadata")),
                    "state": session_pb2.SESSION_STATE_ACTIVE,
                    "parent_session_id": parent.session_id,
                    "forked_at_sequence": request.at_sequence,
                    "message_count": len(copied),
                    "last_sequence": request.at_sequence,
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cost_micros": usage.cost_micros,
                    "version": 1,
                    "agent_ids": [],
                    "create_time_us": now,
                    "update_time_us": now,
                },
            )
            if not inserted:
                raise AlreadyExists(
                    f"session {new_session_id!r} already exists",
                    reason=ErrorReason.ERROR_REASON_SESSION_ALREADY_EXISTS,
                    metadata={"session_id": new_session_id},
                )
            rows = []
            first_by_agent: dict[str, int] = {}
            for m in copied:
                rows.append(
                    message_row(project_id, new_session_id, m.sequence, new_id("msg"), m, now)
                )
                if m.agent_id:
                    first_by_agent.setdefault(m.agent_id, m.sequence)
            if rows:
                await self.store.insert_messages(c, rows)
            await self.store.add_agents(c, project_id, new_session_id, [], first_by_agent)
            return pb.ForkSessionResponse(
                session=await self.store.get(c, project_id, new_session_id)
            )

        response, _ = await run_idempotent(
            self.db,
            project_id,
            "ForkSession",
            request.request_id,
            request,
            pb.ForkSessionResponse,
            work,
        )
        return response.session

    async def usage(self, who: Principal, session_id: str) -> pb.GetSessionUsageResponse:
        M = tables.messages
        async with self.db.read() as c:
            session = await self.store.get(c, who.project_id, session_id)
            if session is None:
                raise session_not_found(session_id)
            by_agent = await self.store.usage_breakdown(c, who.project_id, session_id, M.c.agent_id)
            by_model = await self.store.usage_breakdown(c, who.project_id, session_id, M.c.model)
        return pb.GetSessionUsageResponse(
            session_id=session_id,
            total=session.usage,
            by_agent=[
                pb.AgentUsage(agent_id=key, message_count=n, usage=u) for key, n, u in by_agent
            ],
            by_model=[pb.ModelUsage(model=key, message_count=n, usage=u) for key, n, u in by_model],
        )

    async def watch(
        self, who: Principal, request: pb.WatchSessionRequest
    ) -> AsyncIterator[session_pb2.Message]:
        """Messages after `after_sequence`, then new ones, each once and in order.

        Ends when the session is deleted or the server shuts down (clients resume from the last
        sequence they received).
        """
        project_id, session_id = who.project_id, request.session_id
        last = request.after_sequence
        first_read = True
        shutdown = asyncio.ensure_future(self.shutdown.wait())
        try:
            while not self.shutdown.is_set():
                wake = self.events.waiter(project_id, session_id)
                async with self.db.read() as c:
                    if not await self.store.exists(c, project_id, session_id):
                        if first_read:
                            raise session_not_found(session_id)
                        return  # deleted while watched
                    first_read = False
                    batch = await self.store.list_messages(
                        c, project_id, session_id, last, WATCH_BATCH
                    )
                for message in batch:
                    yield message
                    last = message.sequence
                if len(batch) == WATCH_BATCH:
                    continue
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait(
                    {waiter, shutdown},
                    timeout=self.watch_poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
        finally:
            shutdown.cancel()


def _filter_key(who: Principal, where: SessionFilter) -> dict:
    return {
        "project": who.project_id,
        "user": where.user_id,
        "agent": where.agent_id,
        "state": where.state,
        "parent": where.parent_session_id,
        "after": where.create_after_us,
        "before": where.create_before_us,
    }
