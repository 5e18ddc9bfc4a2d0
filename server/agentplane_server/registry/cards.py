"""Agent cards: the A2A JSON forms (1.0 and 0.3), searchable facets, and filter matching.

Hand-written: the A2A Python SDK (a2a-sdk) brings an HTTP client and server stack the server
does not need; the mapping is a direct field-by-field copy documented in the contract
(registry_service.proto, GetAgentCard), and tests/test_a2a_cards.py checks both forms with
a2a-sdk's own AgentCard types.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as pb

A2A_DEFAULT_PROTOCOL = "0.3.0"  # of an interface whose card names no protocol_version
A2A_CARD_VERSIONS = ("1.0", "0.3")
# A2A 0.3 securitySchemes `type` -> the A2A 1.0 SecurityScheme field (the mapping a2a-sdk's
# card resolver applies to 0.3 cards).
SECURITY_SCHEME_FIELDS = {
    "apiKey": "apiKeySecurityScheme",
    "http": "httpAuthSecurityScheme",
    "oauth2": "oauth2SecurityScheme",
    "openIdConnect": "openIdConnectSecurityScheme",
    "mutualTLS": "mtlsSecurityScheme",
}

CAPABILITY_BITS = {
    pb.AGENT_CAPABILITY_STREAMING: 1 << pb.AGENT_CAPABILITY_STREAMING,
    pb.AGENT_CAPABILITY_PUSH_NOTIFICATIONS: 1 << pb.AGENT_CAPABILITY_PUSH_NOTIFICATIONS,
    pb.AGENT_CAPABILITY_STATE_TRANSITION_HISTORY: (
        1 << pb.AGENT_CAPABILITY_STATE_TRANSITION_HISTORY
    ),
}


def capability_mask(card: agent_pb2.AgentCard) -> int:
    caps = card.capabilities
    mask = 0
    if caps.streaming:
        mask |= CAPABILITY_BITS[pb.AGENT_CAPABILITY_STREAMING]
    if caps.push_notifications:
        mask |= CAPABILITY_BITS[pb.AGENT_CAPABILITY_PUSH_NOTIFICATIONS]
    if caps.state_transition_history:
        mask |= CAPABILITY_BITS[pb.AGENT_CAPABILITY_STATE_TRANSITION_HISTORY]
    return mask


def facets(card: agent_pb2.AgentCard) -> set[tuple[str, str]]:
    """(kind, value) pairs ListAgents filters on."""
    found: set[tuple[str, str]] = set()
    for skill in card.skills:
        found.add(("skill", skill.id))
        found.update(("tag", tag) for tag in skill.tags)
    found.update(("label", f"{k}={v}") for k, v in card.labels.items())
    found.update(("ext", ext.uri) for ext in card.capabilities.extensions)
    return found


def _struct_dict(message: Any) -> dict:
    return json_format.MessageToDict(message)


def a2a_json(card: agent_pb2.AgentCard, a2a_version: str = "1.0") -> dict[str, Any]:
    """The card as an A2A AgentCard JSON object (camelCase) of that version, leaving out empty
    optional fields and the Agentplane-only fields (labels, framework, sdk_language,
    sdk_version). The caller makes sure the card has interfaces (both forms need one)."""
    if a2a_version == "0.3":
        return _a2a_v03(card)
    out: dict[str, Any] = {
        "name": card.name,
        "description": card.description,
        "version": card.version,
        "supportedInterfaces": [
            {
                "url": i.url,
                "protocolBinding": i.transport,
                "protocolVersion": card.protocol_version or A2A_DEFAULT_PROTOCOL,
            }
            for i in card.interfaces
        ],
    }
    _common(card, out)
    capabilities = _capabilities(card)
    capabilities.pop("stateTransitionHistory", None)  # not part of A2A 1.0
    out["capabilities"] = capabilities
    if card.HasField("security_schemes"):
        schemes = _struct_dict(card.security_schemes)
        out["securitySchemes"] = {name: _scheme_v10(s) for name, s in schemes.items()}
    if card.security:
        out["securityRequirements"] = [
            {"schemes": {name: {"list": list(scopes)} for name, scopes in _struct_dict(s).items()}}
            for s in card.security
        ]
    _modes_and_skills(card, out)
    return out


def _scheme_v10(scheme: Any) -> Any:
    """A 0.3 security scheme ({"type": "apiKey", "in": "header", ...}) in the 1.0 form
    ({"apiKeySecurityScheme": {"location": "header", ...}}); other shapes pass unchanged."""
    if not isinstance(scheme, dict) or scheme.get("type") not in SECURITY_SCHEME_FIELDS:
        return scheme
    body = {k: v for k, v in scheme.items() if k != "type"}
    if scheme["type"] == "apiKey" and "in" in body:
        body["location"] = body.pop("in")
    return {SECURITY_SCHEME_FIELDS[scheme["type"]]: body}


def _a2a_v03(card: agent_pb2.AgentCard) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": card.name,
        "description": card.description,
        "version": card.version,
        "protocolVersion": card.protocol_version or A2A_DEFAULT_PROTOCOL,
    }
    if card.interfaces:
        out["url"] = card.interfaces[0].url
        out["preferredTransport"] = card.interfaces[0].transport
        out["additionalInterfaces"] = [
            {"url": i.url, "transport": i.transport} for i in card.interfaces
        ]
    _common(card, out)
    out["capabilities"] = _capabilities(card)
    if card.HasField("security_schemes"):
        out["securitySchemes"] = _struct_dict(card.security_schemes)
    if card.security:
        out["security"] = [_struct_dict(s) for s in card.security]
    _modes_and_skills(card, out)
    return out


def _common(card: agent_pb2.AgentCard, out: dict[str, Any]) -> None:
    if card.HasField("provider"):
        out["provider"] = {"organization": card.provider.organization, "url": card.provider.url}
    if card.icon_url:
        out["iconUrl"] = card.icon_url
    if card.documentation_url:
        out["documentationUrl"] = card.documentation_url


def _capabilities(card: agent_pb2.AgentCard) -> dict[str, Any]:
    caps = card.capabilities
    capabilities: dict[str, Any] = {}
    if caps.streaming:
        capabilities["streaming"] = True
    if caps.push_notifications:
        capabilities["pushNotifications"] = True
    if caps.state_transition_history:
        capabilities["stateTransitionHistory"] = True
    if caps.extensions:
        extensions = []
        for ext in caps.extensions:
            item: dict[str, Any] = {"uri": ext.uri}
            if ext.description:
                item["description"] = ext.description
            if ext.required:
                item["required"] = True
            if ext.HasField("params"):
                item["params"] = _struct_dict(ext.params)
            extensions.append(item)
        capabilities["extensions"] = extensions
    return capabilities


def _modes_and_skills(card: agent_pb2.AgentCard, out: dict[str, Any]) -> None:
    out["defaultInputModes"] = list(card.default_input_modes)
    out["defaultOutputModes"] = list(card.default_output_modes)
    skills = []
    for skill in card.skills:
        item = {
            "id": skill.id,
            "name": skill.name,
            "description": skill.description,
            "tags": list(skill.tags),
        }
        if skill.examples:
            item["examples"] = list(skill.examples)
        if skill.input_modes:
            item["inputModes"] = list(skill.input_modes)
        if skill.output_modes:
            item["outputModes"] = list(skill.output_modes)
        skills.append(item)
    out["skills"] = skills


def matches(agent: agent_pb2.Agent, where: pb.AgentFilter | None) -> bool:
    """AgentFilter semantics in memory (WatchAgents): every set field must match."""
    if where is None:
        return True
    card = agent.card
    if where.agent_ids and agent.agent_id not in where.agent_ids:
        return False
    if where.skill_id and not any(s.id == where.skill_id for s in card.skills):
        return False
    if where.skill_tag and not any(where.skill_tag in s.tags for s in card.skills):
        return False
    if where.capabilities:
        have = capability_mask(card)
        if any(not have & CAPABILITY_BITS[c] for c in where.capabilities):
            return False
    if where.extension_uri and not any(
        e.uri == where.extension_uri for e in card.capabilities.extensions
    ):
        return False
    for key, value in where.labels.items():
        if card.labels.get(key) != value:
            return False
    if where.status and agent.status != where.status:
        return False
    if where.framework and card.framework != where.framework:
        return False
    return not (where.sdk_language and card.sdk_language != where.sdk_language)
