"""The relational schema (SQLAlchemy Core). Alembic migrations in migrations/ create it; a test
checks that the migrations and these tables agree.

Times are integer microseconds since the epoch (exact, index-friendly, identical on SQLite and
PostgreSQL). Every row belongs to a project.
"""

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
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 128  # longest id accepted by the contracts

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
)

sessions = Table(
    "sessions",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("session_id", String(ID), primary_key=True),
    Column("title", String(512), nullable=False, default=""),
    Column("user_id", String(256), nullable=False, default=""),
    Column("labels", JSON, nullable=False, default=dict),
    Column("metadata", JSON, nullable=True),
    Column("state", Integer, nullable=False),
    Column("parent_session_id", String(ID), nullable=False, default=""),
    Column("forked_at_sequence", BigInteger, nullable=False, default=0),
    Column("message_count", BigInteger, nullable=False, default=0),
    Column("last_sequence", BigInteger, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_micros", BigInteger, nullable=False, default=0),
    Column("version", BigInteger, nullable=False, default=1),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "create_time_us", "session_id"),
    Index(None, "project_id", "user_id", "create_time_us"),
    Index(None, "project_id", "parent_session_id"),
)

# Which agents took part in a session, in order of first appearance (for agent_ids and the
# ListSessions agent filter).
session_agents = Table(
    "session_agents",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("session_id", String(ID), primary_key=True),
    Column("agent_id", String(ID), primary_key=True),
    Column("first_sequence", BigInteger, nullable=False),
    Index(None, "project_id", "agent_id", "session_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("session_id", String(ID), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("message_id", String(ID), nullable=False, unique=True),
    Column("role", Integer, nullable=False),
    Column("content", Text, nullable=False, default=""),
    Column("agent_id", String(ID), nullable=False, default=""),
    Column("trace_id", String(32), nullable=False, default=""),
    Column("span_id", String(16), nullable=False, default=""),
    Column("tool_calls", JSON, nullable=True),
    Column("tool_call_id", String(256), nullable=False, default=""),
    Column("model", String(256), nullable=False, default=""),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("cost_micros", BigInteger, nullable=False, default=0),
    Column("cost_currency", String(3), nullable=False, default=""),
    Column("metadata", JSON, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
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
