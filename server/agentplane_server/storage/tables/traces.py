"""Spans ingested through OTLP, and one summary row per trace (kept up to date per batch)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
)

from agentplane_server.storage.tables.base import ID, metadata

spans = Table(
    "spans",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_span_id", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("start_time_us", BigInteger, nullable=False),
    Column("end_time_us", BigInteger, nullable=False),
    Column("status_code", SmallInteger, nullable=False),
    Column("status_message", Text, nullable=False),
    Column("agent_id", String(ID), nullable=False),
    Column("session_id", String(ID), nullable=False),
    Column("service_name", String(256), nullable=False),
    Column("model", String(256), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("cost_currency", String(3), nullable=False),
    # The span as received (OTLP opentelemetry.proto.trace.v1.Span bytes): its attributes,
    # events and links are decoded only when GetTrace reads them, so ingestion stays cheap.
    Column("payload", LargeBinary, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)

traces = Table(
    "traces",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("trace_id", String(32), primary_key=True),
    Column("root_span_name", Text, nullable=False),
    Column("root_start_us", BigInteger, nullable=True),  # the earliest root span wins
    Column("session_id", String(ID), nullable=False),
    Column("session_start_us", BigInteger, nullable=True),  # the earliest span naming one wins
    Column("start_time_us", BigInteger, nullable=False),
    Column("end_time_us", BigInteger, nullable=False),
    Column("span_count", BigInteger, nullable=False),
    Column("error_count", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("cost_currency", String(3), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "start_time_us", "trace_id"),
    Index(None, "project_id", "session_id", "start_time_us"),
    Index(None, "project_id", "update_time_us"),
)

# The agents and models of each trace, with the start of their first span (Trace.agent_ids and
# Trace.models are ordered by it); trace_agents also serves the ListTraces agent filter.
trace_agents = Table(
    "trace_agents",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("trace_id", String(32), primary_key=True),
    Column("agent_id", String(ID), primary_key=True),
    Column("first_start_us", BigInteger, nullable=False),
    Index(None, "project_id", "agent_id", "trace_id"),
)

trace_models = Table(
    "trace_models",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("trace_id", String(32), primary_key=True),
    Column("model", String(256), primary_key=True),
    Column("first_start_us", BigInteger, nullable=False),
)
