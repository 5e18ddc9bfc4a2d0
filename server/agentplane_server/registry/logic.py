"""RegistryService behaviour: registration, leases, etags, filters and watches.

Liveness: every registration or heartbeat sets lease_expire_time. An agent whose lease ran out
reads as STALE at once; the housekeeping job `registry.leases` (one process per deployment)
records the change (STALE event) and removes agents still STALE at remove_time (REMOVED
event). Every change is an event in registry_events, numbered per project; WatchAgents and the
governance snapshots of every replica poll it, so changes made through any replica reach them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from google.protobuf import struct_pb2, timestamp_pb2

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as pb
from agentplane_server.authz import acting_agent
from agentplane_server.context import Principal
from agentplane_server.errors import FailedPrecondition, FieldViolation, NotFound, etag_mismatch
from agentplane_server.pagination import PageTokens
from agentplane_server.registry.cards import a2a_json, matches
from agentplane_server.registry.store import (
    ACTIVE,
    STALE,
    RegistryStore,
    agent_from_row,
    card_columns,
)
from agentplane_server.resources import parse_etag
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

DEFAULT_LEASE_US = 30_000_000
PAGE = (50, 500)
WATCH_BATCH = 500
EVENT_RETENTION_US = 15 * 60 * 1_000_000
HOUSEKEEPING_BATCH = 500


def agent_not_found(agent_id: str) -> NotFound:
    return NotFound(
        f"agent {agent_id!r} is not registered",
        metadata={"resource_type": "agent", "resource_id": agent_id},
    )


def _duration_us(message: object, present: bool) -> int:
    return message.ToMicroseconds() if present else DEFAULT_LEASE_US  # type: ignore[attr-defined]


class Waiters:
    """Wake-ups for this process's watchers of a project; other processes' changes arrive by
    polling. Take the event before reading the database so a change in between is not lost."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def waiter(self, project_id: str) -> asyncio.Event:
        event = self._events.get(project_id)
        if event is None or event.is_set():
            event = self._events[project_id] = asyncio.Event()
        return event

    def notify(self, project_id: str) -> None:
        event = self._events.pop(project_id, None)
        if event is not None:
            event.set()


class RegistryLogic:
    def __init__(
        self,
        db: Database,
        page_tokens: PageTokens,
        *,
        removal_grace: float,
        poll_interval: float,
        shutdown: asyncio.Event,
    ) -> None:
        self.db = db
        self.store = RegistryStore()
        self.page_tokens = page_tokens
        self.grace_us = int(removal_grace * 1_000_000)
        self.poll_interval = poll_interval
        self.shutdown = shutdown
        self.waiters = Waiters()
        # Called with a project id after each committed change (the governance snapshot of
        # this process refreshes at once instead of at its next poll).
        self.listeners: list[Callable[[str], None]] = []

    def _changed(self, project_id: str) -> None:
        self.waiters.notify(project_id)
        for listener in self.listeners:
            listener(project_id)

    def _agent(self, row, now: int) -> agent_pb2.Agent:  # type: ignore[no-untyped-def]
        return agent_from_row(row, self.grace_us, now)

    # -- writes -------------------------------------------------------------------------------

    async def register(self, who: Principal, request: pb.RegisterAgentRequest) -> agent_pb2.Agent:
        agent_id = acting_agent(who, request.agent_id)
        project_id = who.project_id
        lease_us = _duration_us(request.lease_duration, request.HasField("lease_duration"))
        for _attempt in (1, 2):
            async with self.db.write() as c:
                now = now_us()
                values = {
                    **card_columns(request.card),
                    "status": ACTIVE,
                    "lease_duration_us": lease_us,
                    "lease_expire_time_us": now + lease_us,
                    "remove_time_us": None,
                    "last_heartbeat_time_us": now,
                    "update_time_us": now,
                }
                existing = await self.store.get_row(c, project_id, agent_id, lock=True)
                if existing is None:
                    inserted = await self.store.insert(
                        c,
                        {
                            **values,
                            "project_id": project_id,
                            "agent_id": agent_id,
                            "version": 1,
                            "create_time_us": now,
                        },
                    )
                    if not inserted:
                        continue  # registered concurrently: update it instead
                    event, previous = pb.AGENT_EVENT_TYPE_REGISTERED, None
                else:
                    previous = self._agent(existing, now)
                    await self.store.update(
                        c, project_id, agent_id, {**values, "version": existing.version + 1}
                    )
                    event = pb.AGENT_EVENT_TYPE_UPDATED
                await self.store.replace_facets(c, project_id, agent_id, request.card)
                row = await self.store.get_row(c, project_id, agent_id)
                agent = self._agent(row, now)
                await self.store.add_event(c, project_id, event, agent, previous, now)
            self._changed(project_id)
            return agent
        raise AssertionError("unreachable")  # pragma: no cover

    async def heartbeat(
        self, who: Principal, request: pb.HeartbeatAgentRequest
    ) -> pb.HeartbeatAgentResponse:
        agent_id = acting_agent(who, request.agent_id)
        project_id = who.project_id
        changed = False
        async with self.db.write() as c:
            now = now_us()
            row = await self.store.get_row(c, project_id, agent_id, lock=True)
            if row is None:
                raise agent_not_found(agent_id)
            values = {
                "lease_expire_time_us": now + row.lease_duration_us,
                "last_heartbeat_time_us": now,
            }
            version = row.version
            if row.status == STALE:
                # Back from STALE: a visible change (etag, update_time, UPDATED event).
                previous = self._agent(row, now)
                version += 1
                values.update(
                    status=ACTIVE, remove_time_us=None, version=version, update_time_us=now
                )
                changed = True
            await self.store.update(c, project_id, agent_id, values)
            if changed:
                agent = self._agent(await self.store.get_row(c, project_id, agent_id), now)
                await self.store.add_event(
                    c, project_id, pb.AGENT_EVENT_TYPE_UPDATED, agent, previous, now
                )
        if changed:
            self._changed(project_id)
        response = pb.HeartbeatAgentResponse(etag=str(version))
        response.lease_expire_time.FromMicroseconds(values["lease_expire_time_us"])
        response.lease_duration.FromMicroseconds(row.lease_duration_us)
        return response

    async def deregister(self, who: Principal, request: pb.DeregisterAgentRequest) -> None:
        agent_id = acting_agent(who, request.agent_id)
        expected = parse_etag(request.etag, "etag")
        project_id = who.project_id
        async with self.db.write() as c:
            now = now_us()
            row = await self.store.get_row(c, project_id, agent_id, lock=True)
            if row is None:
                raise agent_not_found(agent_id)
            if expected is not None and row.version != expected:
                raise etag_mismatch("agent", agent_id)
            last = self._agent(row, now)
            await self.store.delete(c, project_id, agent_id)
            await self.store.add_event(
                c,
                project_id,
                pb.AGENT_EVENT_TYPE_REMOVED,
                last,
                last,
                now,
                pb.AGENT_REMOVAL_REASON_DEREGISTERED,
            )
        self._changed(project_id)

    async def update(self, who: Principal, request: pb.UpdateAgentRequest) -> agent_pb2.Agent:
        given = request.agent
        agent_id = acting_agent(who, given.agent_id, "agent.agent_id")
        expected = parse_etag(given.etag, "agent.etag")
        project_id = who.project_id
        paths = set(request.update_mask.paths)  # the contract's rules allow card, lease_duration
        async with self.db.write() as c:
            now = now_us()
            row = await self.store.get_row(c, project_id, agent_id, lock=True)
            if row is None:
                raise agent_not_found(agent_id)
            if expected is not None and row.version != expected:
                raise etag_mismatch("agent", agent_id)
            previous = self._agent(row, now)
            values: dict = {"version": row.version + 1, "update_time_us": now}
            if "card" in paths:
                values.update(card_columns(given.card))
            if "lease_duration" in paths:
                # Applies from the next heartbeat, as the contract says.
                values["lease_duration_us"] = _duration_us(
                    given.lease_duration, given.HasField("lease_duration")
                )
            await self.store.update(c, project_id, agent_id, values)
            if "card" in paths:
                await self.store.replace_facets(c, project_id, agent_id, given.card)
            agent = self._agent(await self.store.get_row(c, project_id, agent_id), now)
            await self.store.add_event(
                c, project_id, pb.AGENT_EVENT_TYPE_UPDATED, agent, previous, now
            )
        self._changed(project_id)
        return agent

    # -- reads --------------------------------------------------------------------------------

    async def get(self, who: Principal, agent_id: str) -> agent_pb2.Agent:
        async with self.db.read() as c:
            row = await self.store.get_row(c, who.project_id, agent_id)
        if row is None:
            raise agent_not_found(agent_id)
        return self._agent(row, now_us())

    async def get_card(
        self, who: Principal, agent_id: str, a2a_version: str = ""
    ) -> struct_pb2.Struct:
        agent = await self.get(who, agent_id)
        if not agent.card.interfaces:
            raise FailedPrecondition(
                f"agent {agent_id!r} declares no interfaces; an A2A card needs at least one "
                "endpoint (register the card with interfaces [{url, transport}])",
                reason=ErrorReason.ERROR_REASON_INVALID_REQUEST,
                metadata={"resource_type": "agent", "resource_id": agent_id},
                field_violations=[
                    FieldViolation("card.interfaces", "empty: an A2A card needs an endpoint")
                ],
            )
        card = struct_pb2.Struct()
        card.update(a2a_json(agent.card, a2a_version or "1.0"))
        return card

    async def list(self, who: Principal, request: pb.ListAgentsRequest) -> pb.ListAgentsResponse:
        where = request.filter
        filters = {
            "project": who.project_id,
            "filter": where.SerializeToString(deterministic=True).hex(),
        }
        page = self.page_tokens.page("ListAgents", request, filters, PAGE)
        after = str(page.position[0]) if page.position else None
        now = now_us()
        async with self.db.read() as c:
            rows = await self.store.list_rows(c, who.project_id, where, after, page.fetch, now)
        agents, token = page.finish(rows, lambda r: [r.agent_id])
        return pb.ListAgentsResponse(
            agents=[self._agent(r, now) for r in agents], next_page_token=token
        )

    async def watch(
        self, who: Principal, request: pb.WatchAgentsRequest
    ) -> AsyncIterator[pb.WatchAgentsResponse]:
        project_id = who.project_id
        where = request.filter if request.HasField("filter") else None
        async with self.db.read() as c:
            # The counter first: a change committed after it is sent as an event, even if
            # the snapshot below already includes it (seen twice, never missed).
            last = await self.store.current_seq(c, project_id)
            rows = await self.store.all_rows(c, project_id) if request.send_initial_snapshot else []
        if request.send_initial_snapshot:
            now = now_us()
            taken = timestamp_pb2.Timestamp()
            taken.FromMicroseconds(now)
            for row in rows:
                agent = self._agent(row, now)
                if matches(agent, where):
                    yield pb.WatchAgentsResponse(
                        type=pb.AGENT_EVENT_TYPE_SNAPSHOT, agent=agent, event_time=taken
                    )
            yield pb.WatchAgentsResponse(
                type=pb.AGENT_EVENT_TYPE_SNAPSHOT_COMPLETE, event_time=taken
            )
        shutdown = asyncio.ensure_future(self.shutdown.wait())
        try:
            while not self.shutdown.is_set():
                wake = self.waiters.waiter(project_id)
                async with self.db.read() as c:
                    batch = await self.store.events_after(c, project_id, last, WATCH_BATCH)
                for event in batch:
                    last = event.seq
                    if matches(event.agent, where) or (
                        event.previous is not None and matches(event.previous, where)
                    ):
                        response = pb.WatchAgentsResponse(
                            type=event.type,
                            agent=event.agent,
                            removal_reason=event.removal_reason,
                        )
                        response.event_time.FromMicroseconds(event.event_time_us)
                        yield response
                if len(batch) == WATCH_BATCH:
                    continue
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait(
                    {waiter, shutdown},
                    timeout=self.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
        finally:
            shutdown.cancel()

    # -- housekeeping -------------------------------------------------------------------------

    async def expire_leases(self, db: Database) -> dict[str, int]:
        """Record lapsed leases as STALE and remove agents still STALE at remove_time.

        One transaction per agent, taking the agent's row and then its project's event
        counter, in the same order as RegisterAgent and the other writes (one transaction for
        many agents could deadlock with them on PostgreSQL)."""
        removed = 0
        touched: set[str] = set()
        async with db.read() as c:
            now = now_us()
            lapsed = await self.store.expired_leases(c, now, HOUSEKEEPING_BATCH)
            due = await self.store.due_removals(c, now, HOUSEKEEPING_BATCH)
        for candidate in lapsed:
            async with db.write() as c:
                now = now_us()
                row = await self.store.get_row(
                    c, candidate.project_id, candidate.agent_id, lock=True
                )
                if row is None or row.status != ACTIVE or row.lease_expire_time_us > now:
                    continue  # a heartbeat or deregistration came first
                previous = self._agent(row, row.lease_expire_time_us - 1)
                await self.store.update(
                    c,
                    row.project_id,
                    row.agent_id,
                    {
                        "status": STALE,
                        "remove_time_us": row.lease_expire_time_us + self.grace_us,
                        "version": row.version + 1,
                        "update_time_us": now,
                    },
                )
                fresh = await self.store.get_row(c, row.project_id, row.agent_id)
                await self.store.add_event(
                    c,
                    row.project_id,
                    pb.AGENT_EVENT_TYPE_STALE,
                    self._agent(fresh, now),
                    previous,
                    now,
                )
            touched.add(row.project_id)
        for candidate in due:
            async with db.write() as c:
                now = now_us()
                row = await self.store.get_row(
                    c, candidate.project_id, candidate.agent_id, lock=True
                )
                if row is None or row.status != STALE or (row.remove_time_us or 0) > now:
                    continue
                last = self._agent(row, now)
                await self.store.delete(c, row.project_id, row.agent_id)
                await self.store.add_event(
                    c,
                    row.project_id,
                    pb.AGENT_EVENT_TYPE_REMOVED,
                    last,
                    last,
                    now,
                    pb.AGENT_REMOVAL_REASON_EXPIRED,
                )
            touched.add(row.project_id)
            removed += 1
        async with db.write() as c:
            pruned = await self.store.prune_events(c, now_us() - EVENT_RETENTION_US)
        for project_id in touched:
            self._changed(project_id)
        return {"registry_agents": removed, "registry_events": pruned}
