"""RegistryService end to end against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import queue
import threading
import time
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from rpcutil import expect_error

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import api_key_pb2
from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as pb
from agentplane.registry.v1 import registry_service_pb2_grpc as rpc

# Leases are at least 5 s (contract); a short grace and housekeeping interval let the lease
# test see STALE and REMOVED quickly.
FAST = ("--registry-removal-grace", "1.5", "--registry-housekeeping-interval", "0.2")


def uid(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Project:
    """A fresh project with an admin, a reader and an agent credential."""

    def __init__(self, server, agent_id: str = "billing:pod-1") -> None:  # type: ignore[no-untyped-def]
        self.server = server
        channel = server.channel()
        self.registry = rpc.RegistryServiceStub(channel)
        admin = admin_rpc.AdminServiceStub(channel)
        self.project_id = uid("reg")
        admin.CreateProject(
            admin_pb.CreateProjectRequest(project_id=self.project_id), metadata=server.metadata()
        )
        as_project = server.metadata(**{"x-agentplane-project": self.project_id})

        def key(role: int, **fields) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
            created = admin.CreateApiKey(
                admin_pb.CreateApiKeyRequest(role=role, display_name=uid("k"), **fields),
                metadata=as_project,
            )
            return (("authorization", f"Bearer {created.key}"),)

        self.md = key(api_key_pb2.ROLE_PROJECT_ADMIN)
        self.reader = key(api_key_pb2.ROLE_READER)
        self.agent_id = agent_id
        self.agent = key(api_key_pb2.ROLE_AGENT, agent_id=agent_id)


@pytest.fixture(scope="module")
def server(backend, postgres):  # type: ignore[no-untyped-def]
    from conftest import database_url_for
    from serverproc import ServerProcess

    process = ServerProcess(database_url_for(backend, postgres), extra_args=FAST)
    yield process
    process.stop()


@pytest.fixture
def project(server) -> Project:  # type: ignore[no-untyped-def]
    return Project(server)


def card(name: str = "Billing agent", **kwargs) -> agent_pb2.AgentCard:  # type: ignore[no-untyped-def]
    base = agent_pb2.AgentCard(
        name=name,
        description="Answers billing questions",
        version="1.4.2",
        provider=agent_pb2.AgentProvider(organization="Acme", url="https://acme.example"),
        interfaces=[
            agent_pb2.AgentInterface(url="https://billing.acme.example/a2a", transport="JSONRPC"),
            agent_pb2.AgentInterface(url="grpc://billing.acme.example:443", transport="GRPC"),
        ],
        capabilities=agent_pb2.AgentCapabilities(
            streaming=True,
            extensions=[agent_pb2.AgentExtension(uri="https://ext.example/trace", required=True)],
        ),
        skills=[
            agent_pb2.AgentSkill(
                id="refund",
                name="Refunds",
                description="Issues refunds",
                tags=["billing", "money"],
                examples=["refund order 42"],
                input_modes=["application/json"],
            ),
            agent_pb2.AgentSkill(id="invoice", name="Invoices", tags=["billing"]),
        ],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        labels={"team": "billing", "env": "prod"},
        framework="langgraph",
        sdk_language="python",
        sdk_version="0.3.1",
    )
    base.security_schemes.update({"bearer": {"type": "http", "scheme": "bearer"}})
    for key, value in kwargs.items():
        field = getattr(base, key)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        elif isinstance(value, dict):
            field.clear()
            field.update(value)
        elif isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(base, key, value)
    return base


def register(p: Project, agent_id: str | None = None, md=None, **kwargs) -> agent_pb2.Agent:  # type: ignore[no-untyped-def]
    return p.registry.RegisterAgent(
        pb.RegisterAgentRequest(agent_id=agent_id or uid("agent"), card=card(**kwargs)),
        metadata=md or p.md,
    ).agent


def test_register_get_and_reregister_keeps_create_time(project: Project) -> None:
    agent = register(project, "billing:pod-1")
    assert agent.status == agent_pb2.AGENT_STATUS_ACTIVE
    assert agent.project_id == project.project_id
    assert agent.lease_duration.seconds == 30
    assert (
        agent.lease_expire_time.ToMicroseconds() - agent.last_heartbeat_time.ToMicroseconds()
        == (30_000_000)
    )
    assert not agent.HasField("remove_time")
    fetched = project.registry.GetAgent(
        pb.GetAgentRequest(agent_id="billing:pod-1"), metadata=project.reader
    ).agent
    assert fetched == agent
    again = project.registry.RegisterAgent(
        pb.RegisterAgentRequest(agent_id="billing:pod-1", card=card(version="1.5.0")),
        metadata=project.md,
    ).agent
    assert again.create_time == agent.create_time
    assert again.etag != agent.etag
    assert again.card.version == "1.5.0"


def test_agent_card_is_a2a_json(project: Project) -> None:
    register(project, "billing:card")
    got = project.registry.GetAgentCard(
        pb.GetAgentCardRequest(agent_id="billing:card", a2a_version="0.3"), metadata=project.md
    )
    a2a = json_format.MessageToDict(got.card)
    assert a2a["name"] == "Billing agent"
    assert a2a["protocolVersion"] == "0.3.0"
    assert a2a["url"] == "https://billing.acme.example/a2a"
    assert a2a["preferredTransport"] == "JSONRPC"
    assert a2a["additionalInterfaces"][1] == {
        "url": "grpc://billing.acme.example:443",
        "transport": "GRPC",
    }
    assert a2a["provider"] == {"organization": "Acme", "url": "https://acme.example"}
    assert a2a["capabilities"] == {
        "streaming": True,
        "extensions": [{"uri": "https://ext.example/trace", "required": True}],
    }
    assert a2a["skills"][0] == {
        "id": "refund",
        "name": "Refunds",
        "description": "Issues refunds",
        "tags": ["billing", "money"],
        "examples": ["refund order 42"],
        "inputModes": ["application/json"],
    }
    assert a2a["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert a2a["defaultOutputModes"] == ["text/plain", "application/json"]
    for agentplane_only in ("labels", "framework", "sdkLanguage", "sdkVersion", "iconUrl"):
        assert agentplane_only not in a2a


def test_card_without_interfaces_has_no_a2a_card(project: Project) -> None:
    register(project, "no-endpoint", interfaces=[])
    for version in ("", "1.0", "0.3"):
        error = expect_error(
            grpc.StatusCode.FAILED_PRECONDITION,
            project.registry.GetAgentCard,
            pb.GetAgentCardRequest(agent_id="no-endpoint", a2a_version=version),
            metadata=project.md,
        )
        assert "card.interfaces" in error.field_violations


def test_list_filters_and_pages(project: Project) -> None:
    register(project, "f-1", labels={"team": "billing"}, framework="crewai")
    register(
        project,
        "f-2",
        labels={"team": "search"},
        capabilities=agent_pb2.AgentCapabilities(push_notifications=True),
        skills=[agent_pb2.AgentSkill(id="search", name="Search", tags=["web"])],
        sdk_language="typescript",
    )
    register(project, "f-3", labels={"team": "billing", "env": "dev"})

    def ids(**where) -> list[str]:  # type: ignore[no-untyped-def]
        request = pb.ListAgentsRequest(filter=pb.AgentFilter(**where))
        return [
            a.agent_id for a in project.registry.ListAgents(request, metadata=project.md).agents
        ]

    assert ids() == ["f-1", "f-2", "f-3"]
    assert ids(labels={"team": "billing"}) == ["f-1", "f-3"]
    assert ids(labels={"team": "billing", "env": "dev"}) == ["f-3"]
    assert ids(skill_id="search") == ["f-2"]
    assert ids(skill_tag="billing") == ["f-1", "f-3"]
    assert ids(capabilities=[pb.AGENT_CAPABILITY_PUSH_NOTIFICATIONS]) == ["f-2"]
    assert ids(capabilities=[pb.AGENT_CAPABILITY_STREAMING]) == ["f-1", "f-3"]
    assert ids(extension_uri="https://ext.example/trace") == ["f-1", "f-3"]
    assert ids(framework="crewai") == ["f-1"]
    assert ids(sdk_language="typescript") == ["f-2"]
    assert ids(status=agent_pb2.AGENT_STATUS_ACTIVE) == ["f-1", "f-2", "f-3"]
    assert ids(status=agent_pb2.AGENT_STATUS_STALE) == []
    assert ids(agent_ids=["f-3", "f-1"]) == ["f-1", "f-3"]

    first = project.registry.ListAgents(pb.ListAgentsRequest(page_size=2), metadata=project.md)
    assert [a.agent_id for a in first.agents] == ["f-1", "f-2"]
    rest = project.registry.ListAgents(
        pb.ListAgentsRequest(page_size=2, page_token=first.next_page_token), metadata=project.md
    )
    assert [a.agent_id for a in rest.agents] == ["f-3"] and not rest.next_page_token
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        project.registry.ListAgents,
        pb.ListAgentsRequest(
            page_token=first.next_page_token, filter=pb.AgentFilter(framework="crewai")
        ),
        metadata=project.md,
    )
    assert error.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


def test_update_with_etag(project: Project) -> None:
    agent = register(project, "u-1")
    update = pb.UpdateAgentRequest(
        agent=agent_pb2.Agent(agent_id="u-1", etag=agent.etag, card=card(name="Renamed")),
        update_mask=field_mask_pb2.FieldMask(paths=["card"]),
    )
    updated = project.registry.UpdateAgent(update, metadata=project.md).agent
    assert updated.card.name == "Renamed" and updated.etag != agent.etag
    assert updated.update_time.ToMicroseconds() >= agent.update_time.ToMicroseconds()
    error = expect_error(
        grpc.StatusCode.ABORTED, project.registry.UpdateAgent, update, metadata=project.md
    )
    assert error.reason == "ERROR_REASON_ETAG_MISMATCH"
    lease = pb.UpdateAgentRequest(
        agent=agent_pb2.Agent(agent_id="u-1"),
        update_mask=field_mask_pb2.FieldMask(paths=["lease_duration"]),
    )
    lease.agent.lease_duration.FromSeconds(120)
    assert project.registry.UpdateAgent(
        lease, metadata=project.md
    ).agent.lease_duration.seconds == (120)
    beat = project.registry.HeartbeatAgent(
        pb.HeartbeatAgentRequest(agent_id="u-1"), metadata=project.md
    )
    assert beat.lease_duration.seconds == 120  # applies from the next heartbeat
    missing = pb.UpdateAgentRequest(
        agent=agent_pb2.Agent(agent_id="nobody", card=card()),
        update_mask=field_mask_pb2.FieldMask(paths=["card"]),
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND, project.registry.UpdateAgent, missing, metadata=project.md
    )


def test_heartbeat_of_active_agent_changes_no_etag(project: Project) -> None:
    agent = register(project, "hb-1")
    time.sleep(0.01)
    beat = project.registry.HeartbeatAgent(
        pb.HeartbeatAgentRequest(agent_id="hb-1"), metadata=project.md
    )
    assert beat.etag == agent.etag
    assert beat.lease_expire_time.ToMicroseconds() > agent.lease_expire_time.ToMicroseconds()
    after = project.registry.GetAgent(pb.GetAgentRequest(agent_id="hb-1"), metadata=project.md)
    assert after.agent.update_time == agent.update_time
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        project.registry.HeartbeatAgent,
        pb.HeartbeatAgentRequest(agent_id="never-registered"),
        metadata=project.md,
    )


def test_deregister_with_etag(project: Project) -> None:
    agent = register(project, "d-1")
    expect_error(
        grpc.StatusCode.ABORTED,
        project.registry.DeregisterAgent,
        pb.DeregisterAgentRequest(agent_id="d-1", etag=str(int(agent.etag) + 5)),
        metadata=project.md,
    )
    project.registry.DeregisterAgent(
        pb.DeregisterAgentRequest(agent_id="d-1", etag=agent.etag), metadata=project.md
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        project.registry.GetAgent,
        pb.GetAgentRequest(agent_id="d-1"),
        metadata=project.md,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        project.registry.DeregisterAgent,
        pb.DeregisterAgentRequest(agent_id="d-1"),
        metadata=project.md,
    )


def test_agent_credentials_act_only_as_themselves(project: Project) -> None:
    own = register(project, project.agent_id, md=project.agent)
    assert own.agent_id == project.agent_id
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        project.registry.RegisterAgent,
        pb.RegisterAgentRequest(agent_id="someone-else", card=card()),
        metadata=project.agent,
    )
    assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    register(project, "someone-else")
    for call, request in (
        (project.registry.HeartbeatAgent, pb.HeartbeatAgentRequest(agent_id="someone-else")),
        (project.registry.DeregisterAgent, pb.DeregisterAgentRequest(agent_id="someone-else")),
    ):
        error = expect_error(
            grpc.StatusCode.PERMISSION_DENIED, call, request, metadata=project.agent
        )
        assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    # ...but it may read the registry, and a reader may not write.
    assert (
        project.registry.GetAgent(
            pb.GetAgentRequest(agent_id="someone-else"), metadata=project.agent
        ).agent.agent_id
        == "someone-else"
    )
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        project.registry.RegisterAgent,
        pb.RegisterAgentRequest(agent_id="r-1", card=card()),
        metadata=project.reader,
    )


def test_projects_are_isolated(server) -> None:  # type: ignore[no-untyped-def]
    a, b = Project(server), Project(server)
    register(a, "shared-name")
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        b.registry.GetAgent,
        pb.GetAgentRequest(agent_id="shared-name"),
        metadata=b.md,
    )
    assert b.registry.ListAgents(pb.ListAgentsRequest(), metadata=b.md).agents == []


def _watch(p: Project, request: pb.WatchAgentsRequest) -> tuple[queue.Queue, grpc.Future]:
    events: queue.Queue = queue.Queue()
    call = p.registry.WatchAgents(request, metadata=p.md, timeout=60)

    def pump() -> None:
        try:
            for event in call:
                events.put(event)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    return events, call


def _next(events: queue.Queue, timeout: float = 10) -> pb.WatchAgentsResponse:
    return events.get(timeout=timeout)


def test_watch_snapshot_then_changes_filtered(project: Project) -> None:
    register(project, "w-billing", labels={"team": "billing"})
    register(project, "w-search", labels={"team": "search"})
    events, call = _watch(
        project,
        pb.WatchAgentsRequest(
            filter=pb.AgentFilter(labels={"team": "billing"}), send_initial_snapshot=True
        ),
    )
    try:
        first = _next(events)
        assert first.type == pb.AGENT_EVENT_TYPE_SNAPSHOT and first.agent.agent_id == "w-billing"
        assert _next(events).type == pb.AGENT_EVENT_TYPE_SNAPSHOT_COMPLETE
        register(project, "w-new", labels={"team": "billing"})
        event = _next(events)
        assert (event.type, event.agent.agent_id) == (pb.AGENT_EVENT_TYPE_REGISTERED, "w-new")
        register(project, "w-other", labels={"team": "search"})  # not matching: not sent
        # w-billing moves out of the filter: seen once more, as UPDATED.
        register(project, "w-billing", labels={"team": "search"})
        event = _next(events)
        assert (event.type, event.agent.agent_id) == (pb.AGENT_EVENT_TYPE_UPDATED, "w-billing")
        project.registry.DeregisterAgent(
            pb.DeregisterAgentRequest(agent_id="w-new"), metadata=project.md
        )
        event = _next(events)
        assert event.type == pb.AGENT_EVENT_TYPE_REMOVED
        assert event.removal_reason == pb.AGENT_REMOVAL_REASON_DEREGISTERED
        assert event.agent.agent_id == "w-new" and event.event_time.seconds > 0
        with pytest.raises(queue.Empty):
            events.get(timeout=0.8)
    finally:
        call.cancel()


def test_lease_runs_out_stale_then_removed_and_heartbeat_revives(server) -> None:  # type: ignore[no-untyped-def]
    p = Project(server)
    events, call = _watch(p, pb.WatchAgentsRequest())
    try:
        registered = {}
        for agent_id in ("lease-gone", "lease-back"):
            request = pb.RegisterAgentRequest(agent_id=agent_id, card=card())
            request.lease_duration.FromSeconds(5)
            registered[agent_id] = p.registry.RegisterAgent(request, metadata=p.md).agent
            assert _next(events).type == pb.AGENT_EVENT_TYPE_REGISTERED
        stale = {}
        while len(stale) < 2:
            event = _next(events, timeout=15)
            assert (event.type, event.agent.status) == (
                pb.AGENT_EVENT_TYPE_STALE,
                agent_pb2.AGENT_STATUS_STALE,
            )
            stale[event.agent.agent_id] = event.agent
        gone = stale["lease-gone"]
        assert gone.remove_time.ToMicroseconds() == (
            registered["lease-gone"].lease_expire_time.ToMicroseconds() + 1_500_000
        )
        got = p.registry.GetAgent(pb.GetAgentRequest(agent_id="lease-back"), metadata=p.md).agent
        assert got.status == agent_pb2.AGENT_STATUS_STALE
        assert got.etag != registered["lease-back"].etag
        listed = p.registry.ListAgents(
            pb.ListAgentsRequest(filter=pb.AgentFilter(status=agent_pb2.AGENT_STATUS_STALE)),
            metadata=p.md,
        )
        assert [a.agent_id for a in listed.agents] == ["lease-back", "lease-gone"]
        # A heartbeat makes a STALE agent ACTIVE again (UPDATED)...
        p.registry.HeartbeatAgent(pb.HeartbeatAgentRequest(agent_id="lease-back"), metadata=p.md)
        revived = _next(events)
        assert (revived.type, revived.agent.agent_id, revived.agent.status) == (
            pb.AGENT_EVENT_TYPE_UPDATED,
            "lease-back",
            agent_pb2.AGENT_STATUS_ACTIVE,
        )
        # ...and one still STALE after the grace period is removed.
        removed = _next(events, timeout=10)
        assert (removed.type, removed.agent.agent_id) == (pb.AGENT_EVENT_TYPE_REMOVED, "lease-gone")
        assert removed.removal_reason == pb.AGENT_REMOVAL_REASON_EXPIRED
        expect_error(
            grpc.StatusCode.NOT_FOUND,
            p.registry.HeartbeatAgent,
            pb.HeartbeatAgentRequest(agent_id="lease-gone"),
            metadata=p.md,
        )
        assert (
            p.registry.GetAgent(
                pb.GetAgentRequest(agent_id="lease-back"), metadata=p.md
            ).agent.status
            == agent_pb2.AGENT_STATUS_ACTIVE
        )
    finally:
        call.cancel()
