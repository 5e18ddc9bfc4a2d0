"""client.governance, Governor and governed() against a real server: decisions (server, cached,
local from WatchPolicies), DENY and REQUIRE_APPROVAL, ValidateOutput, ReportExecution with
outcome and duration, sync and async; and failing closed when the server is stopped or mute."""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
import time

import pytest
from serverproc import ServerProcess

import agentplane
from agentplane import (
    ActionDenied,
    ApprovalRequired,
    AsyncGovernor,
    GovernanceUnavailable,
    Governor,
    OutputRejected,
    governed,
)
from agentplane.governance.v1 import approval_pb2, decision_pb2, policy_pb2, trust_pb2
from sdk.sdkutil import eventually, new_project, uid

ALLOW_SEARCH = {
    "name": "search is fine",
    "effect": "POLICY_EFFECT_ALLOW",
    "actions": ["tool:search.*"],
}


@pytest.fixture
def project(client):  # type: ignore[no-untyped-def]
    """A client on a fresh project: its own policies, settings and trust scores."""
    return new_project(client)


# --- failing closed (no governance needed: the server is not there) -----------------------------


def test_fails_closed_when_the_server_is_stopped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(None, data_dir=tmp_path)
    client = agentplane.Client.connect(server.address, api_key=server.admin_key)
    governor = Governor(client, agent_id="bot", timeout=1.0)
    server.stop()
    ran = []

    @governed(action="tool:db.write", governor=governor)
    def write() -> None:
        ran.append(True)

    started = time.monotonic()
    with pytest.raises(GovernanceUnavailable) as caught:
        write()
    assert time.monotonic() - started < 3
    assert ran == []
    assert "failing closed" in str(caught.value) and "tool:db.write" in str(caught.value)
    assert isinstance(caught.value.__cause__, agentplane.UnavailableError)
    with pytest.raises(GovernanceUnavailable), governed("tool:db.write", governor=governor):
        ran.append(True)
    assert ran == []

    # Configurable: fail open, per governor or per governed().
    assert Governor(client, agent_id="bot", timeout=0.5, fail_open=True).check("x").source == (
        "fail_open"
    )
    governed(action="tool:db.write", governor=governor, fail_open=True)(ran.append)(True)
    assert ran == [True]
    client.close()


async def test_fails_closed_async_when_the_server_is_stopped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = ServerProcess(None, data_dir=tmp_path)
    client = await agentplane.AsyncClient.connect(server.address, api_key=server.admin_key)
    server.stop()
    governor = AsyncGovernor(client, agent_id="bot", timeout=1.0)

    async def write() -> str:
        return "wrote"

    with pytest.raises(GovernanceUnavailable):
        await governed(action="tool:db.write", governor=governor)(write)()
    with pytest.raises(GovernanceUnavailable):
        async with governed("tool:db.write", governor=governor):
            pass
    fail_open = governed(action="tool:db.write", governor=governor, fail_open=True)
    assert await fail_open(write)() == "wrote"
    await client.close()


def test_fails_closed_on_timeout_when_the_server_does_not_answer() -> None:
    # A socket that accepts connections and never speaks gRPC: every call runs into its deadline.
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(16)
    try:
        client = agentplane.Client.connect(f"127.0.0.1:{mute.getsockname()[1]}", api_key="k")
        governor = Governor(client, agent_id="bot", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(GovernanceUnavailable) as caught:
            governor.authorize("tool:x")
        elapsed = time.monotonic() - started
        assert elapsed < 3, elapsed
        # gRPC reports a peer that never completes the HTTP/2 handshake as UNAVAILABLE
        # ("timed out before receiving SETTINGS frame") or DEADLINE_EXCEEDED.
        assert isinstance(
            caught.value.__cause__, (agentplane.DeadlineExceededError, agentplane.UnavailableError)
        )
        client.close()
    finally:
        mute.close()


# --- the sub-client ----------------------------------------------------------------------------


def test_governance_sub_client(project) -> None:  # type: ignore[no-untyped-def]
    governance = project.governance
    policy = governance.create_policy(policy_id="allow-search", policy=ALLOW_SEARCH).policy
    assert policy.version == 1 and policy.etag
    assert governance.get_policy(policy_id="allow-search").policy.name == "search is fine"
    assert [p.policy_id for p in governance.list_policies(page_size=1)] == ["allow-search"]
    updated = governance.update_policy(
        policy={"policy_id": "allow-search", "priority": 5, "etag": policy.etag},
        update_mask=["priority"],
    ).policy
    assert updated.version == 2 and updated.priority == 5
    evaluation = governance.evaluate_policies(agent_id="bot", action="tool:search.web")
    assert evaluation.decision == decision_pb2.DECISION_ALLOW
    assert evaluation.explanations[0].policy_id == "allow-search"
    check = governance.check_permission(agent_id="bot", action="tool:search.web")
    assert check.decision == decision_pb2.DECISION_ALLOW and check.decision_id
    denied = governance.check_permission(agent_id="bot", action="tool:db.drop")
    assert denied.decision == decision_pb2.DECISION_DENY  # the default decision
    settings = governance.get_governance_settings().settings
    assert settings.default_decision == decision_pb2.DECISION_DENY
    score = governance.get_trust_score(agent_id="bot").trust_score
    assert 0 <= score.score <= 1
    governance.delete_policy(policy_id="allow-search")
    assert list(governance.list_policies()) == []


# --- governed ------------------------------------------------------------------------------------


def trust_events(client, agent_id: str) -> list:  # type: ignore[no-untyped-def]
    return list(client.governance.list_trust_events(agent_id=agent_id))


def test_governed_sync(project) -> None:  # type: ignore[no-untyped-def]
    project.governance.create_policy(policy=ALLOW_SEARCH)
    agent_id = uid("bot")
    governor = Governor(project, agent_id=agent_id)
    calls: list[str] = []

    @governed(action="tool:search.web", resource=lambda query: f"web://{query}", governor=governor)
    def search(query: str) -> str:
        calls.append(query)
        time.sleep(0.02)
        return f"results for {query}"

    assert search("cats") == "results for cats"
    assert governor.check("tool:search.web", "web://cats").source == "cache"

    @governed(action="tool:db.drop", governor=governor)
    def drop() -> None:
        calls.append("drop")

    with pytest.raises(ActionDenied) as caught:
        drop()
    assert caught.value.decision.decision == decision_pb2.DECISION_DENY
    assert "drop" not in calls

    @governed(action="tool:search.broken", governor=governor)
    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        broken()

    with governed("tool:search.images", governor=governor) as call:
        call.usage = {"input_tokens": 3, "output_tokens": 4}
    assert call.decision.allowed and call.decision.decision_id

    assert governor.flush(10)
    events = trust_events(project, agent_id)
    causes = sorted(trust_pb2.TrustEventCause.Name(e.cause) for e in events)
    assert causes == [
        "TRUST_EVENT_CAUSE_EXECUTION_ERROR",
        "TRUST_EVENT_CAUSE_EXECUTION_SUCCESS",
        "TRUST_EVENT_CAUSE_EXECUTION_SUCCESS",
    ]
    assert {e.action for e in events} == {
        "tool:search.web",
        "tool:search.broken",
        "tool:search.images",
    }
    governor.close()


def test_governed_validates_output(project) -> None:  # type: ignore[no-untyped-def]
    project.governance.create_policy(policy=ALLOW_SEARCH)
    governor = Governor(project, agent_id=uid("bot"))

    @governed(action="tool:search.leak", governor=governor, validate_output=True)
    def leak() -> str:
        return (
            "the key is AKIAIOSFODNN7EXAMPLE with secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        )

    with pytest.raises(OutputRejected) as caught:
        leak()
    assert caught.value.validation.verdict == decision_pb2.VERDICT_REJECT

    @governed(action="tool:search.contact", governor=governor, validate_output=True, redact=True)
    def contact() -> str:
        return "write to jane@example.com"

    redacted = contact()
    assert "jane@example.com" not in redacted and redacted.startswith("write to ")
    governor.close()


def test_decision_cache_follows_the_server_ttl(project) -> None:  # type: ignore[no-untyped-def]
    project.governance.create_policy(policy=ALLOW_SEARCH)
    governor = Governor(project, agent_id="bot")
    first = governor.check("tool:search.a")
    assert first.source == "server" and first.cache_ttl == 30  # the default decision_cache_ttl
    assert governor.check("tool:search.a").source == "cache"
    assert governor.check("tool:search.a", context={"k": 1}).source == "server"
    project.governance.update_governance_settings(
        settings={"decision_cache_ttl": datetime.timedelta(0)}, update_mask=["decision_cache_ttl"]
    )
    governor.cache.clear()
    assert governor.check("tool:search.b").cache_ttl == 0
    assert governor.check("tool:search.b").source == "server"


def test_local_decisions_from_the_policy_stream(project) -> None:  # type: ignore[no-untyped-def]
    project.governance.create_policy(policy=ALLOW_SEARCH)
    governor = Governor(project, agent_id="bot", watch=True)
    assert governor.start_watch(wait=10)
    local = governor.check("tool:search.web")
    assert local.source == "local" and local.allowed
    assert governor.check("tool:db.drop").source == "local"  # default DENY, decided locally
    project.governance.create_policy(
        policy={
            "name": "no danger",
            "effect": policy_pb2.POLICY_EFFECT_DENY,
            "priority": 10,
            "actions": ["tool:search.danger"],
        }
    )

    def denied_locally() -> None:
        decision = governor.check("tool:search.danger")
        assert decision.source == "local" and decision.decision == decision_pb2.DECISION_DENY

    eventually(denied_locally, timeout=5)
    # A condition is the server's to evaluate: such checks go to CheckPermission.
    project.governance.create_policy(
        policy={
            "name": "only small",
            "effect": "POLICY_EFFECT_ALLOW",
            "actions": ["tool:pay"],
            "condition": "context.amount < 100",
        }
    )

    def asks_the_server() -> None:
        decision = governor.check("tool:pay")
        assert decision.source in ("server", "cache") and not decision.allowed

    def allowed_by_the_condition() -> None:
        # The server takes a new policy into its decisions within a second (the contract).
        assert governor.check("tool:pay", context={"amount": 5}).allowed

    eventually(asks_the_server, timeout=5)  # no context: the condition cannot hold
    eventually(allowed_by_the_condition, timeout=5)
    governor.close()


def test_approval_is_awaited(project) -> None:  # type: ignore[no-untyped-def]
    project.governance.create_policy(
        policy={
            "name": "pay needs a human",
            "effect": "POLICY_EFFECT_REQUIRE_APPROVAL",
            "actions": ["tool:pay"],
        }
    )
    governor = Governor(project, agent_id="bot")
    with pytest.raises(ApprovalRequired) as caught:
        governor.authorize("tool:pay", "acct://1")
    approval_id = caught.value.approval_id
    assert approval_id

    def approve() -> None:
        time.sleep(0.5)
        project.governance.resolve_approval(
            approval_id=approval_id, state=approval_pb2.APPROVAL_STATE_APPROVED, comment="ok"
        )

    approver = threading.Thread(target=approve)
    approver.start()

    @governed(action="tool:pay", resource="acct://1", governor=governor, wait_for_approval=15)
    def pay() -> str:
        return "paid"

    assert pay() == "paid"
    approver.join()
    approval = project.governance.get_approval(approval_id=approval_id).approval
    assert approval.state == approval_pb2.APPROVAL_STATE_APPROVED and approval.HasField("use_time")


async def test_governed_async(project, server) -> None:  # type: ignore[no-untyped-def]
    project.governance.create_policy(policy=ALLOW_SEARCH)
    client = await agentplane.AsyncClient.connect(
        server.address, api_key=server.admin_key, project=project.config.project
    )
    agent_id = uid("abot")
    governor = AsyncGovernor(client, agent_id=agent_id)

    @governed(action="tool:search.async", governor=governor)
    async def search(query: str) -> str:
        await asyncio.sleep(0.01)
        return query.upper()

    assert await search("q") == "Q"
    assert (await governor.check("tool:search.async")).source == "cache"

    @governed(action="tool:db.drop", governor=governor)
    async def drop() -> None:
        raise AssertionError("must not run")

    with pytest.raises(ActionDenied):
        await drop()
    async with governed("tool:search.ctx", governor=governor) as call:
        call.message = "fine"
    assert await governor.flush(10)
    events = [e async for e in client.governance.list_trust_events(agent_id=agent_id)]
    assert sorted(e.action for e in events) == ["tool:search.async", "tool:search.ctx"]
    assert all(e.cause == trust_pb2.TRUST_EVENT_CAUSE_EXECUTION_SUCCESS for e in events)
    await governor.close()
    await client.close()


def test_agent_default_governor(project, server) -> None:  # type: ignore[no-untyped-def]
    """governed() without governor= uses the running Agent's, as that agent."""
    project.governance.create_policy(policy=ALLOW_SEARCH)
    agent_id = uid("agent")

    @governed(action="tool:search.default")
    def search() -> str:
        return "ok"

    with agentplane.Agent(project, agent_id=agent_id, name="Default", version="1") as agent:
        assert search() == "ok"
        assert agent.governor is not None and agent.governor.flush(10)
    events = trust_events(project, agent_id)
    assert [e.action for e in events] == ["tool:search.default"]
