"""client.registry and the Agent helpers against a real server: registration with a card,
background lease renewal, deregistration on stop and on SIGTERM, sync and async."""

from __future__ import annotations

import asyncio
import datetime
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import agentplane
from agentplane import AbortedError, NotFoundError
from agentplane.registry.v1 import agent_pb2, registry_service_pb2
from sdk.sdkutil import uid

CARD = {
    "name": "Orders",
    "version": "1.2.0",
    "description": "Answers order questions",
    "skills": [{"id": "order-status", "name": "Order status", "tags": ["orders"]}],
    "labels": {"team": "support"},
    "capabilities": {"streaming": True},
    "framework": "custom",
    "interfaces": [{"url": "https://orders.example/a2a", "transport": "JSONRPC"}],
}


def test_registry_sub_client(client) -> None:  # type: ignore[no-untyped-def]
    registry = client.registry
    agent_id = uid("orders")
    registered = registry.register_agent(
        agent_id=agent_id, card=CARD, lease_duration=datetime.timedelta(seconds=30)
    ).agent
    assert registered.status == agent_pb2.AGENT_STATUS_ACTIVE
    assert registry.get_agent(agent_id=agent_id).agent.card.name == "Orders"
    a2a = registry.get_agent_card(agent_id=agent_id).card
    assert a2a["name"] == "Orders" and a2a["skills"][0]["id"] == "order-status"
    found = [a.agent_id for a in registry.list_agents(filter={"skill_id": "order-status"})]
    assert agent_id in found
    beat = registry.heartbeat_agent(agent_id=agent_id)
    assert beat.lease_duration.ToTimedelta() == datetime.timedelta(seconds=30)
    updated = registry.update_agent(
        agent={"agent_id": agent_id, "card": {**CARD, "version": "1.3.0"}, "etag": registered.etag},
        update_mask=["card"],
    ).agent
    assert updated.card.version == "1.3.0"
    with pytest.raises(AbortedError):
        registry.deregister_agent(agent_id=agent_id, etag=registered.etag)
    with registry.watch_agents(
        filter={"agent_ids": [agent_id]}, send_initial_snapshot=True, timeout=10
    ) as stream:
        events = []
        for event in stream:
            events.append(event.type)
            if event.type == registry_service_pb2.AGENT_EVENT_TYPE_SNAPSHOT_COMPLETE:
                break
    assert events == [
        registry_service_pb2.AGENT_EVENT_TYPE_SNAPSHOT,
        registry_service_pb2.AGENT_EVENT_TYPE_SNAPSHOT_COMPLETE,
    ]
    registry.deregister_agent(agent_id=agent_id)
    with pytest.raises(NotFoundError):
        registry.get_agent(agent_id=agent_id)


def test_agent_registers_renews_its_lease_and_deregisters(client) -> None:  # type: ignore[no-untyped-def]
    agent_id = uid("renew")
    agent = agentplane.Agent(
        client,
        agent_id=agent_id,
        name="Renewer",
        version="2.0.0",
        skills=[{"id": "s1", "name": "Skill one"}],
        lease_duration=5,
    )
    with agent:
        stored = client.registry.get_agent(agent_id=agent_id).agent
        assert stored.card.sdk_language == "python"
        assert stored.card.sdk_version == agentplane.__version__
        first_expiry = stored.lease_expire_time.ToDatetime()
        time.sleep(6.5)  # longer than the lease: only renewals keep it ACTIVE
        renewed = client.registry.get_agent(agent_id=agent_id).agent
        assert renewed.status == agent_pb2.AGENT_STATUS_ACTIVE
        assert renewed.lease_expire_time.ToDatetime() > first_expiry
        assert agent.heartbeats >= 2 and agent.last_error is None
    with pytest.raises(NotFoundError):
        client.registry.get_agent(agent_id=agent_id)


async def test_async_agent(aclient) -> None:  # type: ignore[no-untyped-def]
    agent_id = uid("async-agent")
    async with agentplane.AsyncAgent(aclient, agent_id=agent_id, card=CARD, lease_duration=5) as a:
        assert (await aclient.registry.get_agent(agent_id=agent_id)).agent.card.name == "Orders"
        await asyncio.sleep(2.2)
        assert a.heartbeats >= 1
        agents = [
            x.agent_id
            async for x in aclient.registry.list_agents(filter={"labels": {"team": "support"}})
        ]
        assert agent_id in agents
    with pytest.raises(NotFoundError):
        await aclient.registry.get_agent(agent_id=agent_id)


SIGTERM_SCRIPT = """
import logging, sys, time
import agentplane
logging.basicConfig(level=logging.INFO)
client = agentplane.Client.connect(sys.argv[1], api_key=sys.argv[2])
agentplane.Agent(client, agent_id=sys.argv[3], name="Sig", version="1").start()
print("ready", flush=True)
time.sleep(60)
print("not interrupted", flush=True)
"""

ASYNC_SIGTERM_SCRIPT = """
import asyncio, logging, sys
import agentplane
logging.basicConfig(level=logging.INFO)

async def main():
    client = await agentplane.AsyncClient.connect(sys.argv[1], api_key=sys.argv[2])
    async with agentplane.AsyncAgent(client, agent_id=sys.argv[3], name="Sig", version="1"):
        print("ready", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("script", [SIGTERM_SCRIPT, ASYNC_SIGTERM_SCRIPT], ids=["sync", "async"])
def test_sigterm_deregisters(client, server, script) -> None:  # type: ignore[no-untyped-def]
    agent_id = uid("sigterm")
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), server.address, server.admin_key, agent_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "ready", process.stderr.read() if process.stderr else ""
        assert client.registry.get_agent(agent_id=agent_id).agent.agent_id == agent_id
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The SDK deregistered, then let SIGTERM end the process as it would have without it.
    assert process.returncode == -signal.SIGTERM, stderr
    assert "deregistered agent" in stderr
    with pytest.raises(NotFoundError):
        client.registry.get_agent(agent_id=agent_id)
