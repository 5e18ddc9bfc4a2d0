"""Authentication (who is calling) and the per-method role check (may they call this).

Credentials: `authorization: Bearer <api key>`. Keys are looked up by hash and cached for a few
seconds; a revocation through this process drops the cache at once, other replicas see it
within CACHE_SECONDS. An admin key may act on another project with `x-agentplane-project`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool

from agentplane_server.admin.keys import find_key, touch_key
from agentplane_server.context import Principal, Role
from agentplane_server.errors import NotFound, PermissionDenied, Unauthenticated
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

PROJECT_HEADER = "x-agentplane-project"
CACHE_SECONDS = 5.0
TOUCH_EVERY_US = 60_000_000  # last_used_time is written at most once a minute per key

_NO_SIDE_EFFECTS = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


@dataclass(frozen=True, slots=True)
class MethodInfo:
    service: str
    name: str
    read_only: bool


def method_info(path: str) -> MethodInfo:
    """/pkg.Service/Method -> its service, name and whether the contract marks it read-only."""
    service, _, name = path.lstrip("/").partition("/")
    try:
        method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
        read_only = method.GetOptions().idempotency_level == _NO_SIDE_EFFECTS
    except KeyError:
        read_only = False
    return MethodInfo(service=service, name=name, read_only=read_only)


class Authenticator:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, Principal | None, int | None]] = {}
        self._touched: dict[str, int] = {}
        self._projects: dict[str, float] = {}

    def invalidate(self) -> None:
        self._cache.clear()
        self._projects.clear()

    async def authenticate(self, metadata: dict[str, str], method: MethodInfo) -> Principal:
        header = metadata.get("authorization")
        if not header:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <api key>'"
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthenticated("malformed authorization header: expected 'Bearer <api key>'")
        principal = await self._principal_for(token)
        principal = await self._apply_project_header(principal, metadata.get(PROJECT_HEADER, ""))
        self._authorize(principal, method)
        return principal

    async def _principal_for(self, token: str) -> Principal:
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is None or cached[0] < now:
            async with self.db.read() as c:
                key = await find_key(c, token)
            if key is None:
                cached = (now + CACHE_SECONDS, None, None)
            else:
                principal = Principal(
                    project_id=key.project_id, role=key.role, key_id=key.key_id,
                    agent_id=key.agent_id, credential_project_id=key.project_id,
                    expire_time_us=key.expire_time_us,
                )  # fmt: skip
                if key.revoke_time_us is not None:
                    principal = None
                cached = (now + CACHE_SECONDS, principal, key.expire_time_us)
            self._cache[token] = cached
        _, principal, expire_time_us = cached
        if principal is None:
            # Unknown and revoked keys answer alike, so probing reveals nothing.
            raise Unauthenticated("invalid credentials: unknown or revoked API key")
        now_micros = now_us()
        if expire_time_us is not None and expire_time_us <= now_micros:
            raise Unauthenticated("invalid credentials: the API key has expired")
        if now_micros - self._touched.get(principal.key_id, 0) > TOUCH_EVERY_US:
            self._touched[principal.key_id] = now_micros
            asyncio.get_running_loop().create_task(self._touch(principal.key_id))
        return principal

    async def _touch(self, key_id: str) -> None:
        async with self.db.write() as c:
            await touch_key(c, key_id)

    async def _apply_project_header(self, principal: Principal, project_id: str) -> Principal:
        if not project_id or project_id == principal.project_id:
            return principal
        if principal.role is not Role.ADMIN:
            raise PermissionDenied(
                f"this credential may not act on project {project_id!r}",
                metadata={"project_id": project_id},
            )
        if self._projects.get(project_id, 0) < time.monotonic():
            async with self.db.read() as c:
                found = await c.scalar(
                    tables.projects.select()
                    .with_only_columns(tables.projects.c.project_id)
                    .where(tables.projects.c.project_id == project_id)
                )
            if found is None:
                raise NotFound(
                    f"project {project_id!r} not found",
                    metadata={"resource_type": "project", "resource_id": project_id},
                )
            self._projects[project_id] = time.monotonic() + CACHE_SECONDS
        return dataclasses.replace(principal, project_id=project_id)

    @staticmethod
    def _authorize(principal: Principal, method: MethodInfo) -> None:
        if principal.role is Role.READER and not method.read_only:
            raise PermissionDenied(
                f"{method.service}/{method.name} changes data; a reader credential is read-only",
                metadata={"role": "reader"},
            )
