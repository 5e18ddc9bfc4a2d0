"""Per-call context: the request id and the authenticated principal of the RPC being served.

Interceptors set these; servicers, logic and log records read them.
"""

from __future__ import annotations

import contextvars
import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    """What a credential may do. Values match agentplane.admin.v1.Role."""

    ADMIN = 1  # every project
    PROJECT_ADMIN = 2  # one project: keys, policies, approvals, retention
    AGENT = 3  # one agent in one project
    READER = 4  # read-only


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, on behalf of which project."""

    project_id: str
    role: Role
    key_id: str = ""
    agent_id: str = ""
    subject: str = ""  # JWT subject; empty for API keys
    credential_project_id: str = ""  # the credential's own project (differs for admin override)
    expire_time_us: int | None = None

    @property
    def can_write(self) -> bool:
        return self.role is not Role.READER


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
method_var: contextvars.ContextVar[str] = contextvars.ContextVar("method", default="")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:  # the auth interceptor runs before every servicer
        raise RuntimeError("no authenticated principal in this context")
    return principal
