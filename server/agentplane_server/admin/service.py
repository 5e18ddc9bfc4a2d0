"""Builds AdminService; registers audit event retention."""

from __future__ import annotations

from typing import Any

from agentplane.admin.v1 import admin_service_pb2
from agentplane_server.admin.logic import AdminLogic
from agentplane_server.admin.retention import expire_audit_events
from agentplane_server.admin.servicer import AdminServicer
from agentplane_server.runtime import Runtime

SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


def build(runtime: Runtime) -> dict[str, Any]:
    logic = AdminLogic(runtime.db, runtime.page_tokens, runtime.authenticator.invalidate)
    runtime.add_retention("audit_events", expire_audit_events)
    return {SERVICE: AdminServicer(runtime, logic)}
