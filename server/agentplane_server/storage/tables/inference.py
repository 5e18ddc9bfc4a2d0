"""Inference usage: one row per Embed or Generate call, and daily totals per project (the
inference_tokens_per_day quota reads these, not a sum over the calls)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from agentplane_server.storage.tables.base import ID, metadata

inference_usage = Table(
    "inference_usage",
    metadata,
    Column("usage_id", String(ID), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("agent_id", String(ID), nullable=False),
    Column("session_id", String(ID), nullable=False),
    Column("method", String(32), nullable=False),  # "Embed" or "Generate"
    Column("model", String(ID), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("request_id", String(ID), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    # agentplane.inference.v1.FinishReason for Generate; 0 for Embed.
    Column("finish_reason", Integer, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "create_time_us"),
    Index(None, "project_id", "agent_id", "create_time_us"),
)

inference_usage_daily = Table(
    "inference_usage_daily",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("day", Integer, primary_key=True),  # days since 1970-01-01, UTC
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
)
