"""Builds SessionService; registers session retention."""

from __future__ import annotations

from typing import Any

from agentplane.session.v1 import session_service_pb2
from agentplane_server.runtime import Runtime
from agentplane_server.session.events import SessionEvents
from agentplane_server.session.logic import SessionLogic
from agentplane_server.session.retention import expire_sessions
from agentplane_server.session.servicer import SessionServicer

SERVICE = session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name


def build(runtime: Runtime) -> dict[str, Any]:
    logic = SessionLogic(
        runtime.db,
        SessionEvents(),
        runtime.page_tokens,
        runtime.settings.watch_poll_interval,
        runtime.shutdown,
    )
    runtime.add_retention("sessions", expire_sessions)
    return {SERVICE: SessionServicer(logic)}
