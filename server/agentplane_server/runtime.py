"""What every service receives: the database, settings, page tokens, the authenticator, health,
the shutdown event, and where to register housekeeping jobs, retention and stop hooks.

app.py creates one Runtime per process and passes it to each service package's build(runtime);
services import this module, never app.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import sqlalchemy as sa
from google.protobuf import duration_pb2, json_format

from agentplane.admin.v1 import project_pb2
from agentplane_server.config import Settings
from agentplane_server.health_service import HealthServicer
from agentplane_server.housekeeping import Housekeeping, Job
from agentplane_server.interceptors.auth import Authenticator
from agentplane_server.pagination import PageTokens
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)

# One project's retention for one domain: (db, project_id, the project's retention settings,
# now in microseconds, {table: rows removed} to add to).
Retention = Callable[
    [Database, str, project_pb2.RetentionSettings, int, Counter[str]], Awaitable[None]
]
StopHook = Callable[[], Awaitable[None]]


@dataclass
class Runtime:
    """One server process's shared pieces, handed to every service's build(runtime)."""

    settings: Settings
    db: Database
    authenticator: Authenticator
    page_tokens: PageTokens
    housekeeping: Housekeeping
    health: HealthServicer
    shutdown: asyncio.Event = field(default_factory=asyncio.Event)
    # Run after in-flight calls have drained, before the database closes (flush write-behind
    # buffers here), in order.
    stop_hooks: list[StopHook] = field(default_factory=list)
    # Services whose health status their own monitor keeps (they start NOT_SERVING and do not
    # follow the database's health), e.g. inference while Triton is unreachable.
    self_reported_health: set[str] = field(default_factory=set)
    # Servicers built so far, by full service name (a service may use one built before it).
    servicers: dict[str, Any] = field(default_factory=dict)
    # Services outside the agentplane contract, served on both listeners (OTLP Export).
    extra_services: dict[str, grpc.GenericRpcHandler] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
    services: list[str] = field(default_factory=list)
    port: int = 0
    http_port: int = 0  # 0: no HTTP listener
    _retention: list[tuple[str, Retention]] = field(default_factory=list)

    @property
    def instance_id(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def add_job(self, name: str, interval: float, run: Job) -> None:
        """A periodic job on the deployment's one housekeeping loop."""
        self.housekeeping.add(name, interval, run)

    def add_retention(self, domain: str, run: Retention) -> None:
        """Per-project retention of one domain's records (ProjectSettings.retention), run in
        registration order by the housekeeping job "retention"."""
        if not self._retention:
            self.housekeeping.add(
                "retention", self.settings.retention_interval, self._run_retention
            )
        self._retention.append((domain, run))

    def on_stop(self, hook: StopHook) -> None:
        self.stop_hooks.append(hook)

    async def _run_retention(self, db: Database) -> dict[str, int]:
        """The housekeeping job: every project's settings read once, each domain applied."""
        removed: Counter[str] = Counter()
        now = now_us()
        async with db.read() as c:
            projects = (
                await c.execute(sa.select(tables.projects.c.project_id, tables.projects.c.settings))
            ).all()
        for project_id, settings in projects:
            retention = _retention_settings(settings)
            for _domain, run in self._retention:
                await run(db, project_id, retention, now, removed)
        return dict(removed)


def _retention_settings(settings: dict | None) -> project_pb2.RetentionSettings:
    parsed = project_pb2.ProjectSettings()
    try:
        json_format.ParseDict(settings or {}, parsed, ignore_unknown_fields=True)
    except json_format.ParseError:
        log.warning("unreadable project settings; retention skipped")
        return project_pb2.RetentionSettings()
    return parsed.retention


def cutoff_us(now: int, keep: duration_pb2.Duration) -> int | None:
    """The time before which records go, or None when they are kept forever (no setting)."""
    age = keep.ToMicroseconds()
    return now - age if age > 0 else None
