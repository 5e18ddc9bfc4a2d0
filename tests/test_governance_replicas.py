"""Governance across server processes and through shutdown, on SQLite and on PostgreSQL:
policy changes reach another replica within a second, the decision log holds exactly one
record per decision after a burst and a SIGTERM, and a full decision-log queue answers
RESOURCE_EXHAUSTED instead of dropping decisions."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import grpc
import psycopg
from conftest import database_url_for
from google.protobuf import field_mask_pb2
from rpcutil import rich_error
from test_governance_helpers import Project

from agentplane.governance.v1 import decision_pb2, policy_pb2
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import governance_service_pb2_grpc as rpc
from agentplane.registry.v1 import registry_service_pb2 as registry_pb
from agentplane.registry.v1 import registry_service_pb2_grpc as registry_rpc

ALLOW = policy_pb2.POLICY_EFFECT_ALLOW
D = decision_pb2


def _connect(server):  # type: ignore[no-untyped-def]
    if server.database_url is None:
        return sqlite3.connect(server.data_dir / "agentplane.db", timeout=30, isolation_level=None)
    return psycopg.connect(
        server.database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )


def _decision_ids(server) -> list[str]:  # type: ignore[no-untyped-def]
    with _connect(server) as db:
        return [r[0] for r in db.execute("SELECT decision_id FROM governance_decisions").fetchall()]


def _until(probe, limit: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until probe() is true (fails past `limit`)."""
    began = time.monotonic()
    while not probe():
        assert time.monotonic() - began < limit, f"not within {limit}s"
        time.sleep(0.02)
    return time.monotonic() - began


def test_a_policy_change_through_one_replica_is_enforced_by_another_within_a_second(
    backend, postgres, make_server
) -> None:  # type: ignore[no-untyped-def]
    url = database_url_for(backend, postgres)
    one = make_server(url)
    two = make_server(url, data_dir=one.data_dir)
    p = Project(one)
    other = rpc.GovernanceServiceStub(two.channel())

    def decision_on_two(action: str = "tool:db.query") -> int:
        return other.CheckPermission(
            pb.CheckPermissionRequest(agent_id="billing", action=action), metadata=p.md
        ).decision

    assert decision_on_two() == D.DECISION_DENY  # replica two has loaded the project
    p.policy("db", ALLOW, actions=["tool:db.*"])
    assert _until(lambda: decision_on_two() == D.DECISION_ALLOW, 1.0) < 1.0
    p.gov.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy=policy_pb2.Policy(policy_id="db", actions=["tool:db.read"]),
            update_mask=field_mask_pb2.FieldMask(paths=["actions"]),
        ),
        metadata=p.md,
    )
    assert _until(lambda: decision_on_two() == D.DECISION_DENY, 1.0) < 1.0
    # Trust changes and registrations reach the other replica too.
    p.policy("trusted", ALLOW, actions=["tool:refund"], min_trust_score=0.8)
    p.policy(
        "labelled", ALLOW, actions=["tool:mail"], agents=policy_pb2.AgentSelector(labels={"t": "x"})
    )
    assert _until(lambda: decision_on_two("tool:refund") == D.DECISION_DENY, 1.0) < 1.0
    p.gov.AdjustTrustScore(pb.AdjustTrustScoreRequest(agent_id="billing", score=0.9), metadata=p.md)
    assert _until(lambda: decision_on_two("tool:refund") == D.DECISION_ALLOW, 1.0) < 1.0
    # WatchAgents on replica two sees a registration made through replica one.
    watch = registry_rpc.RegistryServiceStub(two.channel()).WatchAgents(
        registry_pb.WatchAgentsRequest(send_initial_snapshot=True), metadata=p.md, timeout=10
    )
    try:
        assert next(watch).type == registry_pb.AGENT_EVENT_TYPE_SNAPSHOT_COMPLETE
        p.register("billing", labels={"t": "x"})
        assert _until(lambda: decision_on_two("tool:mail") == D.DECISION_ALLOW, 1.0) < 1.0
        event = next(watch)
        assert (event.type, event.agent.agent_id) == (
            registry_pb.AGENT_EVENT_TYPE_REGISTERED,
            "billing",
        )
    finally:
        watch.cancel()


def test_burst_then_sigterm_logs_every_decision_exactly_once(
    backend, postgres, make_server
) -> None:  # type: ignore[no-untyped-def]
    server = make_server(database_url_for(backend, postgres))
    p = Project(server)
    p.policy("half", ALLOW, actions=["tool:even*"])
    received: list[str] = []

    async def burst() -> None:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = rpc.GovernanceServiceStub(channel)
            next_index = iter(range(10_000))

            async def worker() -> None:
                for i in next_index:
                    reply = await stub.CheckPermission(
                        pb.CheckPermissionRequest(
                            agent_id=f"agent-{i % 50}", action=f"tool:{'even' if i % 2 else 'odd'}"
                        ),
                        metadata=p.md,
                    )
                    received.append(reply.decision_id)

            await asyncio.gather(*(worker() for _ in range(64)))

    asyncio.run(burst())
    assert len(received) == len(set(received)) == 10_000
    assert server.stop() == 0  # SIGTERM: drain, flush the decision log, exit cleanly
    stored = _decision_ids(server)
    assert len(stored) == 10_000 and set(stored) == set(received)


def test_full_decision_log_answers_resource_exhausted_until_the_database_is_back(
    backend, postgres, make_server
) -> None:  # type: ignore[no-untyped-def]
    server = make_server(
        database_url_for(backend, postgres),
        extra_args=("--decision-log-capacity", "30", "--decision-log-batch", "10"),
    )
    p = Project(server)
    p.check()  # loads the project's snapshot before the database goes away
    time.sleep(0.3)
    lock = _connect(server)
    # Make the decision log's table unwritable, as if the database were away for writes.
    if backend == "sqlite":
        lock.execute("BEGIN EXCLUSIVE")
    else:
        lock.execute("BEGIN")
        lock.execute("LOCK TABLE governance_decisions IN ACCESS EXCLUSIVE MODE")
    accepted: list[str] = []
    refused = None
    try:
        for _ in range(60):
            try:
                accepted.append(p.check().decision_id)
            except grpc.RpcError as error:
                refused = rich_error(error)
                break
        assert refused is not None, "the queue never filled"
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.retry_delay is not None and refused.retry_delay > 0
        assert 29 <= len(accepted) <= 31
    finally:
        time.sleep(0.5)  # the writer retries meanwhile
        lock.execute("ROLLBACK")
        lock.close()
    first = accepted[0]
    # Once the database is back, the backlog is written and checks are answered again.
    _until(lambda: len(_decision_ids(server)) >= len(accepted) + 1, 30)
    accepted.append(p.check().decision_id)
    assert server.stop() == 0
    stored = _decision_ids(server)
    assert first in stored and set(accepted) <= set(stored)
    assert len(stored) == len(accepted) + 1  # + the very first check, nothing refused is logged
