"""API keys: minted with 256 bits of randomness, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane_server.context import Role
from agentplane_server.storage import tables
from agentplane_server.storage.db import now_us

KEY_PREFIX = "apk_"
T = tables.api_keys


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MintedKey:
    key_id: str
    secret: str  # shown to the caller once, never stored or logged


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    project_id: str
    role: Role
    agent_id: str
    expire_time_us: int | None
    revoke_time_us: int | None
    rate_limit_rps: float | None

    @classmethod
    def from_row(cls, row: Any) -> StoredKey:
        return cls(
            key_id=row.key_id,
            project_id=row.project_id,
            role=Role(row.role),
            agent_id=row.agent_id,
            expire_time_us=row.expire_time_us,
            revoke_time_us=row.revoke_time_us,
            rate_limit_rps=row.rate_limit_rps,
        )


async def create_key(
    c: AsyncConnection,
    project_id: str,
    role: Role,
    *,
    display_name: str = "",
    agent_id: str = "",
    expire_time_us: int | None = None,
    rate_limit_rps: float | None = None,
    creator_key_id: str = "",
    secret: str | None = None,
) -> MintedKey:
    """Mint a key (or register `secret`, an operator-provided one: the bootstrap key)."""
    key_id = f"key_{secrets.token_hex(8)}"
    secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
    await c.execute(
        T.insert().values(
            key_id=key_id,
            project_id=project_id,
            display_name=display_name,
            role=int(role),
            agent_id=agent_id,
            secret_hash=hash_secret(secret),
            prefix=secret[:12],
            rate_limit_rps=rate_limit_rps,
            expire_time_us=expire_time_us,
            create_time_us=now_us(),
            creator_key_id=creator_key_id,
        )
    )
    return MintedKey(key_id=key_id, secret=secret)


async def find_key(c: AsyncConnection, secret: str) -> StoredKey | None:
    row = (await c.execute(sa.select(T).where(T.c.secret_hash == hash_secret(secret)))).first()
    return None if row is None else StoredKey.from_row(row)


async def touch_key(c: AsyncConnection, key_id: str) -> None:
    await c.execute(sa.update(T).where(T.c.key_id == key_id).values(last_used_time_us=now_us()))
