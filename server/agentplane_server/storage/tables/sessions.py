"""Sessions, their messages and the agents that took part."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from agentplane_server.storage.tables.base import ID, metadata

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
    # The agents that took part, in order of first appearance: session_agents denormalised so
    # reads of a session take one query.
    Column("agent_ids", JSON, nullable=False, server_default="[]"),
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
