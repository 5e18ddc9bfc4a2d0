"""Helpers for the governance tests (no tests here): a fresh project with one credential of each
role, stubs, and polling for write-behind results."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import grpc
from google.protobuf import struct_pb2

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import api_key_pb2
from agentplane.governance.v1 import governance_service_pb2 as pb
from agentplane.governance.v1 import governance_service_pb2_grpc as rpc
from agentplane.governance.v1 import policy_pb2
from agentplane.registry.v1 import agent_pb2
from agentplane.registry.v1 import registry_service_pb2 as registry_pb
from agentplane.registry.v1 import registry_service_pb2_grpc as registry_rpc

T = TypeVar("T")
MD = tuple[tuple[str, str], ...]


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Project:
    def __init__(self, server, agent_id: str = "billing") -> None:  # type: ignore[no-untyped-def]
        self.server = server
        channel = server.channel()
        self.gov = rpc.GovernanceServiceStub(channel)
        self.registry = registry_rpc.RegistryServiceStub(channel)
        self.admin_stub = admin_rpc.AdminServiceStub(channel)
        self.project_id = uid("gov")
        self.admin_stub.CreateProject(
            admin_pb.CreateProjectRequest(project_id=self.project_id), metadata=server.metadata()
        )
        self.md = self.key(api_key_pb2.ROLE_PROJECT_ADMIN)
        self.reader = self.key(api_key_pb2.ROLE_READER)
        self.agent_id = agent_id
        self.agent = self.key(api_key_pb2.ROLE_AGENT, agent_id=agent_id)

    def key(self, role: int, **fields) -> MD:  # type: ignore[no-untyped-def]
        created = self.admin_stub.CreateApiKey(
            admin_pb.CreateApiKeyRequest(role=role, display_name=uid("k"), **fields),
            metadata=self.server.metadata(**{"x-agentplane-project": self.project_id}),
        )
        return (("authorization", f"Bearer {created.key}"),)

    def policy(self, policy_id: str, effect: int, **fields) -> policy_pb2.Policy:  # type: ignore[no-untyped-def]
        fields.setdefault("name", policy_id)
        return self.gov.CreatePolicy(
            pb.CreatePolicyRequest(
                policy_id=policy_id, policy=policy_pb2.Policy(effect=effect, **fields)
            ),
            metadata=self.md,
        ).policy

    def check(self, action: str = "tool:db.query", md: MD | None = None, **fields):  # type: ignore[no-untyped-def]
        if md is None:
            fields.setdefault("agent_id", self.agent_id)
        if "context" in fields and isinstance(fields["context"], dict):
            fields["context"] = struct(fields["context"])
        return self.gov.CheckPermission(
            pb.CheckPermissionRequest(action=action, **fields), metadata=md or self.md
        )

    def register(self, agent_id: str, **card) -> agent_pb2.Agent:  # type: ignore[no-untyped-def]
        card.setdefault("name", agent_id)
        card.setdefault("version", "1.0.0")
        return self.registry.RegisterAgent(
            registry_pb.RegisterAgentRequest(agent_id=agent_id, card=agent_pb2.AgentCard(**card)),
            metadata=self.md,
        ).agent


def struct(values: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def eventually(probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """probe() until it returns a truthy value or stops raising RpcError/AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
        except (grpc.RpcError, AssertionError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
