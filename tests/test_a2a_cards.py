"""The registry's A2A export, checked with the A2A project's own SDK (a2a-sdk): the 1.0 card
parses strictly into its AgentCard and has every field A2A marks required; the 0.3 card
validates with its 0.3 models. The card comes from the Python SDK's Agent, as agents register."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from a2a.client.card_resolver import parse_agent_card
from a2a.compat.v0_3 import types as a2a_v03
from a2a.types import a2a_pb2
from google.api import field_behavior_pb2
from google.protobuf import json_format, message
from rpcutil import expect_error
from sdk.sdkutil import uid

import agentplane
from agentplane.registry.v1 import registry_service_pb2 as pb
from agentplane.registry.v1 import registry_service_pb2_grpc as rpc

INTERFACES = [
    {"url": "https://orders.example/a2a", "transport": "JSONRPC"},
    {"url": "https://orders.example/grpc", "transport": "GRPC"},
]


def missing_required(msg: message.Message, path: str = "") -> list[str]:
    """Fields A2A's proto marks REQUIRED (google.api.field_behavior) that are unset or empty."""
    missing = []
    for field in msg.DESCRIPTOR.fields:
        behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        value = getattr(msg, field.name)
        repeated = field.is_repeated
        if field_behavior_pb2.REQUIRED in behaviors:
            empty = (
                (len(value) == 0)
                if repeated
                else (not msg.HasField(field.name) if field.message_type else value in ("", 0))
            )
            if empty:
                missing.append(path + field.name)
        if field.message_type and not field.message_type.GetOptions().map_entry:
            children = value if repeated else ([value] if msg.HasField(field.name) else [])
            for i, child in enumerate(children):
                missing += missing_required(child, f"{path}{field.name}[{i}].")
    return missing


FULL_CARD = {
    "name": "Orders",
    "version": "1.2.0",
    "description": "Answers order questions",
    "provider": {"organization": "Acme", "url": "https://acme.example"},
    "capabilities": {"streaming": True},
    "default_input_modes": ["text/plain"],
    "default_output_modes": ["text/plain", "application/json"],
    "skills": [
        {
            "id": "order-status",
            "name": "Order status",
            "description": "Where an order is",
            "tags": ["orders"],
        }
    ],
    "interfaces": INTERFACES,
}


@pytest.fixture
def registered(server):  # type: ignore[no-untyped-def]
    """An agent registered by the Python SDK's Agent, declaring its interfaces."""
    client = agentplane.Client.connect(server.address, api_key=server.admin_key)
    agent_id = uid("orders")
    agent = agentplane.Agent(
        client,
        agent_id=agent_id,
        name="Orders",
        version="1.2.0",
        description="Answers order questions",
        skills=[{"id": "order-status", "name": "Order status", "tags": ["orders"]}],
        interfaces=INTERFACES,
        handle_sigterm=False,
    )
    with agent:
        yield agent_id
    client.close()


def card_json(server, agent_id: str, version: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    got = rpc.RegistryServiceStub(server.channel()).GetAgentCard(
        pb.GetAgentCardRequest(agent_id=agent_id, a2a_version=version), metadata=server.metadata()
    )
    return json_format.MessageToDict(got.card)


def test_a2a_1_0_card_is_valid_for_a2a_sdk(server, registered) -> None:  # type: ignore[no-untyped-def]
    for version in ("", "1.0"):
        card = card_json(server, registered, version)
        strict = json_format.ParseDict(card, a2a_pb2.AgentCard())  # unknown fields raise
        assert [(i.url, i.protocol_binding) for i in strict.supported_interfaces] == [
            (i["url"], i["transport"]) for i in INTERFACES
        ]
        assert "protocolVersion" not in card and "url" not in card  # 0.3-only fields
        assert parse_agent_card(dict(card)) == strict  # what an A2A 1.x client makes of it


def test_a_complete_card_has_every_field_a2a_1_0_requires(server) -> None:  # type: ignore[no-untyped-def]
    client = agentplane.Client.connect(server.address, api_key=server.admin_key)
    agent_id = uid("complete")
    with agentplane.Agent(client, agent_id=agent_id, card=FULL_CARD, handle_sigterm=False):
        card = card_json(server, agent_id, "1.0")
    client.close()
    assert missing_required(json_format.ParseDict(card, a2a_pb2.AgentCard())) == [], card
    # and the check itself catches a gap
    del card["supportedInterfaces"][0]["protocolBinding"]
    assert missing_required(json_format.ParseDict(card, a2a_pb2.AgentCard())) == [
        "supported_interfaces[0].protocol_binding"
    ]


def test_a2a_0_3_card_is_valid_with_its_url(server, registered) -> None:  # type: ignore[no-untyped-def]
    card = card_json(server, registered, "0.3")
    validated = a2a_v03.AgentCard.model_validate(card)
    assert validated.url == INTERFACES[0]["url"]
    known = {f.alias or name for name, f in a2a_v03.AgentCard.model_fields.items()} | set(
        a2a_v03.AgentCard.model_fields
    )
    assert set(card) <= known, set(card) - known


def test_security_schemes_are_converted_to_the_1_0_form(server) -> None:  # type: ignore[no-untyped-def]
    from agentplane.registry.v1 import agent_pb2

    stub = rpc.RegistryServiceStub(server.channel())
    card = agent_pb2.AgentCard(
        name="Secured", version="1.0.0", interfaces=[agent_pb2.AgentInterface(**INTERFACES[0])]
    )
    card.security_schemes.update(
        {
            "key": {"type": "apiKey", "in": "header", "name": "X-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    )
    card.security.add().update({"key": []})
    agent_id = uid("secured")
    stub.RegisterAgent(
        pb.RegisterAgentRequest(agent_id=agent_id, card=card), metadata=server.metadata()
    )
    v10 = card_json(server, agent_id, "1.0")
    strict = json_format.ParseDict(v10, a2a_pb2.AgentCard())
    assert strict.security_schemes["key"].api_key_security_scheme.location == "header"
    assert strict.security_schemes["bearer"].http_auth_security_scheme.scheme == "bearer"
    assert list(strict.security_requirements[0].schemes) == ["key"]
    v03 = a2a_v03.AgentCard.model_validate(card_json(server, agent_id, "0.3"))
    assert v03.security == [{"key": []}]


def test_a_card_without_interfaces_and_an_unknown_version_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    from agentplane.registry.v1 import agent_pb2

    stub = rpc.RegistryServiceStub(server.channel())
    agent_id = uid("bare")
    stub.RegisterAgent(
        pb.RegisterAgentRequest(
            agent_id=agent_id, card=agent_pb2.AgentCard(name="Bare", version="1.0.0")
        ),
        metadata=server.metadata(),
    )
    error = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        stub.GetAgentCard,
        pb.GetAgentCardRequest(agent_id=agent_id),
        metadata=server.metadata(),
    )
    assert "card.interfaces" in error.field_violations
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.GetAgentCard,
        pb.GetAgentCardRequest(agent_id=agent_id, a2a_version="2.0"),
        metadata=server.metadata(),
    )
    assert "a2a_version" in error.field_violations
