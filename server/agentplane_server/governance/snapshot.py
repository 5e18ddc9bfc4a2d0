"""In-memory governance state per project, kept fresh across replicas.

CheckPermission decides from a ProjectSnapshot: compiled policies, settings, the registry's
agents (for selectors and the `agent` variable) and trust scores. A snapshot is loaded from the
database the first time a project is used in this process; after that one poller task per
process asks the database every `poll_interval` (default 200 ms) for the project revisions:

- governance_projects.policy_revision (policies and settings): changed -> reload the
  project's policies and settings (conditions compile once per text, cached);
- governance_projects.trust_revision: changed -> read the trust rows with a newer revision;
- registry_projects.event_seq: changed -> apply the registry events after the last one seen.

Revisions are taken under a row lock in the writing transaction, so they commit in order and
`> last seen` misses nothing. A change made through any replica therefore reaches every
replica within one poll interval plus one query (well under a second); a change made through
this process is applied at once. While the database is away, decisions go on from the last
snapshot and the poller retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from agentplane.governance.v1 import policy_pb2
from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as registry_pb
from agentplane_server.governance import store
from agentplane_server.governance.evaluate import AgentView, CompiledPolicy
from agentplane_server.governance.trust import TrustState, current, state_from_row
from agentplane_server.registry.store import RegistryStore
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

MAX_CANDIDATE_CACHE = 50_000
REGISTRY_BATCH = 1000
_STATUS = {agent_pb2.AGENT_STATUS_ACTIVE: "ACTIVE", agent_pb2.AGENT_STATUS_STALE: "STALE"}


def policy_from_row(row: Any) -> policy_pb2.Policy:
    policy = policy_pb2.Policy.FromString(row.body)
    policy.policy_id = row.policy_id
    policy.project_id = row.project_id
    policy.effect = row.effect
    policy.priority = row.priority
    policy.enabled = row.enabled
    policy.version = row.version
    policy.etag = str(row.version)
    policy.create_time.FromMicroseconds(row.create_time_us)
    policy.update_time.FromMicroseconds(row.update_time_us)
    return policy


def agent_view(agent: agent_pb2.Agent) -> AgentView:
    card = agent.card
    return AgentView(
        agent_id=agent.agent_id,
        registered=True,
        status=_STATUS.get(agent.status, ""),
        labels=dict(card.labels),
        framework=card.framework,
        sdk_language=card.sdk_language,
        skill_ids=tuple(s.id for s in card.skills),
        lease_expire_time_us=agent.lease_expire_time.ToMicroseconds(),
    )


class ProjectSnapshot:
    """Everything a decision for one project needs, in memory."""

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        self.policy_revision = -1
        self.trust_revision = -1
        self.registry_seq = -1
        self.settings = store.DEFAULT_SETTINGS
        self.policies: dict[str, CompiledPolicy] = {}
        self.ordered: list[CompiledPolicy] = []  # enabled, deciding order
        self.agents: dict[str, AgentView] = {}
        self.trust: dict[str, TrustState] = {}
        self._by_agent: dict[str, list[CompiledPolicy]] = {}
        self._candidates: dict[tuple[str, str], list[CompiledPolicy]] = {}
        self._changed = asyncio.Event()
        self.lock = asyncio.Lock()  # one refresh at a time, so revisions never go back

    # -- reading --------------------------------------------------------------------------------

    def agent(self, agent_id: str) -> AgentView:
        return self.agents.get(agent_id) or AgentView(agent_id=agent_id)

    def trust_score(self, agent_id: str, at_us: int) -> float:
        s = self.settings
        return current(self.trust.get(agent_id), at_us, s.trust_baseline, s.trust_half_life_us)

    def selecting(self, agent: AgentView) -> list[CompiledPolicy]:
        """Enabled policies whose agent selector matches the agent (cached per agent)."""
        found = self._by_agent.get(agent.agent_id)
        if found is None:
            found = [p for p in self.ordered if p.selects(agent.agent_id, agent.labels)]
            self._by_agent[agent.agent_id] = found
        return found

    def candidates(self, agent: AgentView, action: str) -> list[CompiledPolicy]:
        """Enabled policies selecting the agent and matching the action (cached); resource,
        trust and condition are checked per request."""
        key = (agent.agent_id, action)
        found = self._candidates.get(key)
        if found is None:
            found = [p for p in self.selecting(agent) if p.action_matches(action)]
            if len(self._candidates) >= MAX_CANDIDATE_CACHE:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def waiter(self) -> asyncio.Event:
        """Set at the next change of this snapshot (WatchPolicies)."""
        if self._changed.is_set():
            self._changed = asyncio.Event()
        return self._changed

    # -- changing -------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    def set_policies(
        self, revision: int, settings: store.SettingsRow, rows: list[Any], previous: dict
    ) -> None:
        policies: dict[str, CompiledPolicy] = {}
        for row in rows:
            known = previous.get(row.policy_id)
            if known is not None and known.version == row.version:
                policies[row.policy_id] = known  # unchanged: keep the compiled form
                continue
            policy = policy_from_row(row)
            try:
                policies[row.policy_id] = CompiledPolicy(policy)
            except Exception as exc:  # fails closed: see CompiledPolicy.uncompilable
                log.warning(
                    "stored policy does not compile; its condition fails on every request",
                    extra={"policy": row.policy_id, "problem": str(exc)[:300]},
                )
                policies[row.policy_id] = CompiledPolicy.uncompilable(policy, str(exc)[:300])
        self.policies = policies
        self.ordered = sorted((p for p in policies.values() if p.enabled), key=lambda p: p.sort_key)
        self.settings = settings
        self.policy_revision = revision
        self._by_agent = {}
        self._candidates = {}
        self._notify()

    def set_trust(self, revision: int, rows: list[Any]) -> None:
        for row in rows:
            self.trust[row.agent_id] = state_from_row(row)
        self.trust_revision = max(self.trust_revision, revision)
        if rows:
            self._notify()

    def set_agents(self, seq: int, agents: dict[str, AgentView]) -> None:
        self.agents = agents
        self.registry_seq = seq
        self._by_agent = {}
        self._candidates = {}
        self._notify()

    def apply_registry_event(self, seq: int, event_type: int, agent: agent_pb2.Agent) -> None:
        if event_type == registry_pb.AGENT_EVENT_TYPE_REMOVED:
            self.agents.pop(agent.agent_id, None)
        else:
            self.agents[agent.agent_id] = agent_view(agent)
        self.registry_seq = seq
        self._by_agent.pop(agent.agent_id, None)
        if self._candidates:
            self._candidates = {k: v for k, v in self._candidates.items() if k[0] != agent.agent_id}
        self._notify()


class Snapshots:
    """The snapshots of this process and the poller that keeps them fresh."""

    def __init__(self, db: Database, poll_interval: float) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.projects: dict[str, ProjectSnapshot] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self._task: asyncio.Task | None = None
        self._poke = asyncio.Event()
        self._closing = False
        self._registry = RegistryStore()
        self.listeners: list[Callable[[str], None]] = []

    async def get(self, project_id: str) -> ProjectSnapshot:
        snapshot = self.projects.get(project_id)
        if snapshot is not None:
            return snapshot
        loading = self._loading.get(project_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_future()
            self._loading[project_id] = loading
            try:
                snapshot = ProjectSnapshot(project_id)
                await self._refresh(snapshot)
                self.projects[project_id] = snapshot
                loading.set_result(snapshot)
            except BaseException as exc:
                loading.set_exception(exc)
                loading.exception()  # retrieved: waiters below re-raise it
                raise
            finally:
                self._loading.pop(project_id, None)
            self.start()
            return snapshot
        return await asyncio.shield(loading)

    async def refresh(self, project_id: str) -> None:
        """Catch up one loaded project now (after a change made through this process)."""
        snapshot = self.projects.get(project_id)
        if snapshot is not None:
            await self._refresh(snapshot)

    def poke(self, project_id: str) -> None:
        """Ask the poller to look now (a change committed in this process)."""
        if project_id in self.projects:
            self._poke.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._closing = True
            self._poke.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            self._task = None

    async def _loop(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll_interval)
            self._poke.clear()
            if self._closing:
                return
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("governance poll failed", extra={"error": type(exc).__name__})

    async def poll(self) -> None:
        ids = list(self.projects)
        if not ids:
            return
        async with self.db.read() as c:
            revisions = await store.revisions(c, ids)
            seqs = await self._registry.seqs(c, ids)
        for project_id in ids:
            snapshot = self.projects[project_id]
            policy_revision, trust_revision = revisions.get(project_id, (0, 0))
            if (
                policy_revision != snapshot.policy_revision
                or trust_revision != snapshot.trust_revision
                or seqs.get(project_id, 0) != snapshot.registry_seq
            ):
                await self._refresh(snapshot)

    async def _refresh(self, snapshot: ProjectSnapshot) -> None:
        async with snapshot.lock:
            changed = await self._refresh_locked(snapshot)
        if changed:
            for listener in self.listeners:
                listener(snapshot.project_id)

    async def _refresh_locked(self, snapshot: ProjectSnapshot) -> bool:
        project_id = snapshot.project_id
        changed = False
        async with self.db.read() as c:
            # Revisions before the rows they cover: rows newer than the revision read are
            # read again at the next poll, never missed.
            row = await store.get_project_row(c, project_id)
            policy_revision = int(row.policy_revision) if row is not None else 0
            trust_revision = int(row.trust_revision) if row is not None else 0
            if policy_revision != snapshot.policy_revision:
                rows = await store.all_policies(c, project_id)
                snapshot.set_policies(
                    policy_revision, store.settings_from_row(row), rows, snapshot.policies
                )
                changed = True
            if trust_revision != snapshot.trust_revision:
                after = snapshot.trust_revision if snapshot.trust_revision >= 0 else -1
                trust_rows = await store.trust_rows(c, project_id, after)
                snapshot.set_trust(trust_revision, trust_rows)
                changed = True
            seq = await self._registry.current_seq(c, project_id)
            if seq != snapshot.registry_seq:
                await self._catch_up_registry(c, snapshot, seq)
                changed = True
        return changed

    async def _catch_up_registry(self, c: Any, snapshot: ProjectSnapshot, seq: int) -> None:
        if snapshot.registry_seq >= 0:
            events = await self._registry.events_after(
                c, snapshot.project_id, snapshot.registry_seq, REGISTRY_BATCH
            )
            # Event numbers have no gaps; a gap means events were pruned: load afresh.
            if (
                events
                and events[0].seq == snapshot.registry_seq + 1
                and len(events) < REGISTRY_BATCH
            ):
                for event in events:
                    snapshot.apply_registry_event(event.seq, event.type, event.agent)
                return
        now = now_us()
        from agentplane_server.registry.store import agent_from_row

        rows = await self._registry.all_rows(c, snapshot.project_id)
        snapshot.set_agents(seq, {r.agent_id: agent_view(agent_from_row(r, 0, now)) for r in rows})
