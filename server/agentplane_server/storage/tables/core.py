"""Server secrets, projects, API keys, request ids and the audit log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from agentplane_server.storage.tables.base import ID, metadata

server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("display_name", String(256), nullable=False, default=""),
    Column("settings", JSON, nullable=False, default=dict),
    Column("labels", JSON, nullable=False, default=dict),
    Column("version", Integer, nullable=False, default=1),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(ID), primary_key=True),
    Column(
        "project_id", String(ID), ForeignKey("projects.project_id", ondelete="CASCADE"), index=True
    ),
    Column("display_name", String(256), nullable=False, default=""),
    Column("role", Integer, nullable=False),
    Column("agent_id", String(ID), nullable=False, default=""),
    # SHA-256 of the secret. Keys are 256-bit random values, so a slow password hash adds
    # nothing; a database dump still does not reveal a usable key.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False),
    Column("rate_limit_rps", Float, nullable=True),
    Column("expire_time_us", BigInteger, nullable=True),
    Column("last_used_time_us", BigInteger, nullable=True),
    Column("revoke_time_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    Column("creator_key_id", String(ID), nullable=False, server_default=""),
)

# Admin actions (projects, keys, roles, settings), listable per project.
audit_events = Table(
    "audit_events",
    metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("actor_key_id", String(ID), nullable=False),
    Column("actor_subject", String(256), nullable=False),
    Column("actor_project_id", String(ID), nullable=False),
    Column("actor_role", Integer, nullable=False),
    Column("actor_agent_id", String(ID), nullable=False),
    Column("action", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(ID), nullable=False),
    Column("details", JSON, nullable=True),
    Column("request_id", String(ID), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "create_time_us", "event_id"),
)

# Results of create-style calls by client request id, so a retry returns the first result.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("method", String(64), primary_key=True),
    Column("request_id", String(ID), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Index(None, "create_time_us"),
)
