"""Feedback on agents' answers, and the categories each one lists."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    SmallInteger,
    String,
    Table,
    Text,
)

from agentplane_server.storage.tables.base import ID, metadata

feedback = Table(
    "feedback",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("feedback_id", String(ID), primary_key=True),
    Column("rating", SmallInteger, nullable=False),
    Column("score", Float, nullable=True),
    Column("comment", Text, nullable=False, default=""),
    Column("correction", Text, nullable=False, default=""),
    Column("categories", JSON, nullable=False, default=list),
    Column("source", SmallInteger, nullable=False),
    Column("user_id", String(256), nullable=False, default=""),
    Column("agent_id", String(ID), nullable=False, default=""),
    Column("session_id", String(ID), nullable=False, default=""),
    Column("message_id", String(ID), nullable=False, default=""),
    Column("trace_id", String(32), nullable=False, default=""),
    Column("metadata", JSON, nullable=True),
    # The agent whose own credential wrote this feedback ("" for a person's feedback token or
    # an operator's credential): what an agent says about itself never moves its trust, and
    # an agent may change only the feedback it wrote.
    Column("author_agent_id", String(ID), nullable=False, server_default=""),
    # One feedback per key and project: a digest of (user_id, message_id) when both are set, or
    # of the feedback token for anonymous SubmitFeedback; NULL (never equal) otherwise.
    Column("dedupe_key", String(80), nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    # ListFeedback without filters (newest first) and retention.
    Index(None, "project_id", "create_time_us", "feedback_id"),
    # "All thumbs-down this week": one backward range scan, stops after one page.
    Index(None, "project_id", "rating", "create_time_us", "feedback_id"),
    Index(None, "project_id", "agent_id", "create_time_us"),
    Index(None, "project_id", "session_id", "create_time_us"),
    Index(None, "project_id", "trace_id", "create_time_us"),
    Index(None, "project_id", "user_id", "create_time_us"),
    Index(None, "project_id", "dedupe_key", unique=True),
)

# The categories of each feedback, one row each, for the ListFeedback category filter (the
# JSON list in feedback.categories is what reads return).
feedback_categories = Table(
    "feedback_categories",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("feedback_id", String(ID), primary_key=True),
    Column("category", String(64), primary_key=True),
    Index(None, "project_id", "category", "feedback_id"),
)
