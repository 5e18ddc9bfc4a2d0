"""Authorisation rules that logic applies beyond the per-method role check of the auth
interceptor: agents act only as themselves."""

from __future__ import annotations

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.context import Principal, Role
from agentplane_server.errors import PermissionDenied


def acting_agent(principal: Principal, requested: str, field: str = "agent_id") -> str:
    """The agent a write is attributed to.

    An agent credential writes only as itself: an empty field takes the credential's agent id,
    another agent id is refused. Other roles may attribute writes to any agent (e.g. a gateway
    relaying for several agents).
    """
    if principal.role is not Role.AGENT:
        return requested
    if requested and requested != principal.agent_id:
        raise PermissionDenied(
            f"{field} {requested!r} is not the calling agent {principal.agent_id!r}; "
            "an agent credential may only act as its own agent",
            reason=ErrorReason.ERROR_REASON_AGENT_IDENTITY_MISMATCH,
            metadata={"agent_id": principal.agent_id, "field": field},
        )
    return principal.agent_id
