"""Helpers shared by the SDK tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import agentplane
from agentplane.admin.v1 import api_key_pb2

T = TypeVar("T")


def uid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_project(client: agentplane.Client) -> agentplane.Client:
    """A client acting on a new, empty project (isolates settings and policies per test)."""
    project_id = uid("p")
    client.admin.create_project(project_id=project_id, display_name=project_id)
    return client.with_options(project=project_id)


def agent_key(client: agentplane.Client, agent_id: str) -> str:
    """A ROLE_AGENT API key for ``agent_id`` in the client's project."""
    return client.admin.create_api_key(
        role=api_key_pb2.ROLE_AGENT, agent_id=agent_id, display_name=agent_id
    ).key


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.1) -> T:
    """``check()`` once it stops raising AssertionError (or the last error after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)
