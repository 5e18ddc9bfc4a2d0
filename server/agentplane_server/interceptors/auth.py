"""Authentication (who is calling), the per-method role check, and per-credential rate limits.

Credentials, in order:
- `authorization: Bearer apk_...`: an API key, looked up by hash and cached for CACHE_SECONDS
  (a revocation through this process applies at once; other replicas see it within that time);
- `authorization: Bearer <JWT>`: verified against the configured JWKS or key file;
- no header, but a verified client certificate whose subject is mapped to a principal (mTLS).
An admin credential may act on another project with `x-agentplane-project: <project_id>`.

Every cache here is bounded (cachetools LRU/TTL caches; a credential is kept only as its
digest), unknown keys have a small cache of their own, and tokens longer than MAX_TOKEN_CHARS
are refused before any lookup: credentials an outsider makes up cannot grow the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from cachetools import LRUCache, TTLCache
from google.protobuf import descriptor_pb2, descriptor_pool
from prometheus_client import Gauge

from agentplane_server.auth.jwt import JwtVerifier
from agentplane_server.auth.keys import KEY_PREFIX, find_key, hash_secret, touch_key
from agentplane_server.auth.mtls import ClientCertificates
from agentplane_server.auth.ratelimit import RateLimiter
from agentplane_server.config import Settings
from agentplane_server.context import Principal, Role
from agentplane_server.errors import NotFound, PermissionDenied, Unauthenticated
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

log = logging.getLogger(__name__)
PROJECT_HEADER = "x-agentplane-project"
CACHE_SECONDS = 5.0
TOUCH_EVERY_US = 60_000_000  # last_used_time is written at most once a minute per key
# API keys are "apk_" and 43 characters; JWTs from identity providers stay well under this.
MAX_TOKEN_CHARS = 8192
MAX_API_KEY_CHARS = 128
KEY_CACHE_SIZE = 10_000  # keys that authenticated, by hash
UNKNOWN_KEY_CACHE_SIZE = 1_000  # unknown or revoked keys, by hash: spares the database repeats
PROJECT_CACHE_SIZE = 10_000

CACHE_ENTRIES = Gauge(
    "agentplane_auth_cache_entries",
    "Entries in an authentication cache (each has a fixed maximum).",
    ["cache"],
    multiprocess_mode="livemax",
)

_NO_SIDE_EFFECTS = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS

# Methods whose request carries its own credential, which the service verifies: they need no
# API key, JWT or client certificate, and run with ANONYMOUS (no project, read-only role).
# Keep this list short and explicit; each entry names where its credential is checked.
SELF_AUTHENTICATED_METHODS = frozenset(
    {
        # The feedback token in the request (feedback/tokens.py, FeedbackLogic.submit).
        "agentplane.feedback.v1.FeedbackService/SubmitFeedback",
    }
)
ANONYMOUS = Principal(project_id="", role=Role.READER, subject="anonymous")


@dataclass(frozen=True, slots=True)
class MethodInfo:
    service: str
    name: str
    read_only: bool
    # Its request carries its own credential (SELF_AUTHENTICATED_METHODS), decided once here.
    self_authenticated: bool = False


def method_info(path: str) -> MethodInfo:
    """/pkg.Service/Method -> its service, name and whether the contract marks it read-only."""
    service, _, name = path.lstrip("/").partition("/")
    try:
        method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
        read_only = method.GetOptions().idempotency_level == _NO_SIDE_EFFECTS
    except KeyError:
        read_only = False
    return MethodInfo(
        service=service,
        name=name,
        read_only=read_only,
        self_authenticated=f"{service}/{name}" in SELF_AUTHENTICATED_METHODS,
    )


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    valid_until: float
    principal: Principal | None  # None: unknown or revoked
    rate_limit: float | None


@dataclass(frozen=True, slots=True)
class _ProjectEntry:
    valid_until: float
    exists: bool
    rate_limit: float | None


class Authenticator:
    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self.jwt = JwtVerifier.from_settings(settings) if settings else None
        self.certificates = ClientCertificates.from_settings(settings) if settings else None
        self.limiter = RateLimiter()
        self._keys: TTLCache[str, _KeyEntry] = TTLCache(KEY_CACHE_SIZE, CACHE_SECONDS)
        self._unknown_keys: TTLCache[str, _KeyEntry] = TTLCache(
            UNKNOWN_KEY_CACHE_SIZE, CACHE_SECONDS
        )
        self._projects: TTLCache[str, _ProjectEntry] = TTLCache(PROJECT_CACHE_SIZE, CACHE_SECONDS)
        self._touched: LRUCache[str, int] = LRUCache(KEY_CACHE_SIZE)

    def invalidate(self) -> None:
        """Forget cached keys and projects (after a revocation or a settings change)."""
        self._keys.clear()
        self._unknown_keys.clear()
        self._projects.clear()

    async def authenticate(
        self,
        metadata: Mapping[str, str],
        method: MethodInfo,
        auth_context: Mapping[str, Sequence[bytes]] | None = None,
    ) -> Principal:
        if method.self_authenticated:
            return ANONYMOUS
        principal, key_limit = await self._credential(metadata, auth_context)
        principal = await self._apply_project_header(principal, metadata.get(PROJECT_HEADER, ""))
        self._authorize(principal, method)
        project = await self._project(principal.credential_project_id or principal.project_id)
        if not project.exists:  # a JWT or certificate naming a project that is not there
            raise Unauthenticated("invalid credentials: the credential's project does not exist")
        limits = [x for x in (key_limit, project.rate_limit) if x]
        self.limiter.check(principal.key_id or principal.subject, min(limits, default=None))
        return principal

    async def _credential(
        self, metadata: Mapping[str, str], auth_context: Mapping[str, Sequence[bytes]] | None
    ) -> tuple[Principal, float | None]:
        header = metadata.get("authorization")
        if not header:
            if self.certificates is not None and auth_context:
                principal = self.certificates.principal_for(auth_context)
                if principal is not None:
                    return principal, None
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <api key or JWT>'"
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthenticated("malformed authorization header: expected 'Bearer <token>'")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(
                f"malformed authorization header: the token is longer than {MAX_TOKEN_CHARS} "
                "characters"
            )
        if token.startswith(KEY_PREFIX):
            if len(token) > MAX_API_KEY_CHARS:  # no key is this long: no lookup, no cache entry
                raise Unauthenticated("invalid credentials: unknown or revoked API key")
            return await self._api_key(token)
        if self.jwt is not None and token.count(".") == 2:
            return await self.jwt.verify(token), None
        # Unknown keys, revoked keys and unusable tokens answer alike: probing learns nothing.
        raise Unauthenticated("invalid credentials: unknown or revoked API key")

    async def _api_key(self, token: str) -> tuple[Principal, float | None]:
        now = time.monotonic()
        digest = hash_secret(token)
        entry = self._keys.get(digest) or self._unknown_keys.get(digest)
        if entry is None or entry.valid_until < now:
            async with self.db.read() as c:
                key = await find_key(c, token)
            principal = None
            if key is not None and key.revoke_time_us is None:
                principal = Principal(
                    project_id=key.project_id,
                    role=key.role,
                    key_id=key.key_id,
                    agent_id=key.agent_id,
                    credential_project_id=key.project_id,
                    expire_time_us=key.expire_time_us,
                )
            entry = _KeyEntry(now + CACHE_SECONDS, principal, key.rate_limit_rps if key else None)
            if principal is not None:
                self._keys[digest] = entry
                self._unknown_keys.pop(digest, None)
                CACHE_ENTRIES.labels("api_keys").set(len(self._keys))
            else:
                self._keys.pop(digest, None)
                self._unknown_keys[digest] = entry
                CACHE_ENTRIES.labels("unknown_api_keys").set(len(self._unknown_keys))
        principal = entry.principal
        if principal is None:
            raise Unauthenticated("invalid credentials: unknown or revoked API key")
        now_micros = now_us()
        if principal.expire_time_us is not None and principal.expire_time_us <= now_micros:
            raise Unauthenticated("invalid credentials: the API key has expired")
        if now_micros - self._touched.get(principal.key_id, 0) > TOUCH_EVERY_US:
            self._touched[principal.key_id] = now_micros
            asyncio.get_running_loop().create_task(self._touch(principal.key_id))
        return principal, entry.rate_limit

    async def _touch(self, key_id: str) -> None:
        # Best effort, off the call's path: a busy or unreachable database only delays it.
        try:
            async with self.db.write() as c:
                await touch_key(c, key_id)
        except Exception as exc:  # written again a minute later (TOUCH_EVERY_US)
            log.warning("could not record an API key's last use: %s", type(exc).__name__)

    async def _project(self, project_id: str) -> _ProjectEntry:
        entry = self._projects.get(project_id)
        if entry is None or entry.valid_until < time.monotonic():
            async with self.db.read() as c:
                settings = await c.scalar(
                    sa.select(tables.projects.c.settings).where(
                        tables.projects.c.project_id == project_id
                    )
                )
            quotas = (settings or {}).get("quotas", {})
            entry = _ProjectEntry(
                time.monotonic() + CACHE_SECONDS,
                exists=settings is not None,
                rate_limit=float(quotas.get("requestsPerSecondPerKey", 0)) or None,
            )
            self._projects[project_id] = entry
            CACHE_ENTRIES.labels("projects").set(len(self._projects))
        return entry

    async def _apply_project_header(self, principal: Principal, project_id: str) -> Principal:
        if not project_id or project_id == principal.project_id:
            return principal
        if principal.role is not Role.ADMIN:
            raise PermissionDenied(
                f"this credential may not act on project {project_id!r}",
                metadata={"project_id": project_id},
            )
        if not (await self._project(project_id)).exists:
            raise NotFound(
                f"project {project_id!r} not found",
                metadata={"resource_type": "project", "resource_id": project_id},
            )
        return dataclasses.replace(principal, project_id=project_id)

    @staticmethod
    def _authorize(principal: Principal, method: MethodInfo) -> None:
        if principal.role is Role.READER and not method.read_only:
            raise PermissionDenied(
                f"{method.service}/{method.name} changes data; a reader credential is read-only",
                metadata={"role": "reader"},
            )
