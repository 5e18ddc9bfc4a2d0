"""Governance: settings and revisions per project, policies, trust, approvals, budgets and the
decision log."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from agentplane_server.storage.tables.base import ID, metadata

# One row per project that changed its settings, a policy or a trust score. policy_revision
# and trust_revision only grow: every replica polls them to keep its in-memory snapshot fresh.
governance_projects = Table(
    "governance_projects",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("default_decision", Integer, nullable=False),
    Column("trust_baseline", Float, nullable=False),
    Column("trust_half_life_us", BigInteger, nullable=False),
    Column("approval_expiry_us", BigInteger, nullable=False),
    Column("decision_cache_ttl_us", BigInteger, nullable=False),
    Column("settings_version", BigInteger, nullable=False),
    Column("settings_update_time_us", BigInteger, nullable=True),
    Column("policy_revision", BigInteger, nullable=False),
    Column("trust_revision", BigInteger, nullable=False),
)

governance_policies = Table(
    "governance_policies",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("policy_id", String(ID), primary_key=True),
    Column("effect", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    # The Policy as given (selectors, globs, condition, budgets...), serialized; output-only
    # fields are filled from the columns.
    Column("body", LargeBinary, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "priority", "policy_id"),
)

# The score as of score_time_us (decay to later times is computed, not stored).
governance_trust_scores = Table(
    "governance_trust_scores",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("agent_id", String(ID), primary_key=True),
    Column("score", Float, nullable=False),
    Column("score_time_us", BigInteger, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("last_decay_event_us", BigInteger, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Index(None, "project_id", "revision"),
)

governance_trust_events = Table(
    "governance_trust_events",
    metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("agent_id", String(ID), nullable=False),
    Column("cause", Integer, nullable=False),
    Column("delta", Float, nullable=False),
    Column("score_after", Float, nullable=False),
    Column("action", String(256), nullable=False),
    Column("decision_id", String(ID), nullable=False),
    Column("request_id", String(ID), nullable=False),
    Column("feedback_id", String(ID), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("comment", Text, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "create_time_us", "event_id"),
    Index(None, "project_id", "agent_id", "create_time_us"),
    Index(None, "project_id", "feedback_id"),
)

governance_approvals = Table(
    "governance_approvals",
    metadata,
    Column("approval_id", String(ID), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("agent_id", String(ID), nullable=False),
    Column("action", String(256), nullable=False),
    Column("resource", String(1024), nullable=False),
    Column("context", JSON, nullable=True),
    # SHA-256 of agent, action, resource and context: what a presented approval must match.
    Column("request_hash", String(64), nullable=False),
    # project + request_hash while PENDING, NULL after: at most one pending approval per
    # request (NULLs never collide in a unique index, on both databases).
    Column("pending_key", String(200), nullable=True, unique=True),
    Column("decision_id", String(ID), nullable=False),
    Column("policy_id", String(ID), nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("state", Integer, nullable=False),
    Column("reviewer", String(256), nullable=False),
    Column("comment", Text, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("resolve_time_us", BigInteger, nullable=True),
    Column("use_time_us", BigInteger, nullable=True),
    Column("update_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "create_time_us", "approval_id"),
    Index(None, "state", "expire_time_us"),
)

# Budget spend per sliding-window bucket, summed over every replica (write-behind).
governance_budget_spend = Table(
    "governance_budget_spend",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("budget_key", String(400), primary_key=True),
    Column("bucket_us", BigInteger, primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Index(None, "bucket_us"),
)

# The decision log: one immutable record per CheckPermission or ValidateOutput decision.
governance_decisions = Table(
    "governance_decisions",
    metadata,
    Column("decision_id", String(ID), primary_key=True),
    Column("project_id", String(ID), nullable=False),
    Column("kind", Integer, nullable=False),
    Column("agent_id", String(ID), nullable=False),
    Column("action", String(256), nullable=False),
    Column("decision", Integer, nullable=False),
    Column("verdict", Integer, nullable=False),
    Column("record", LargeBinary, nullable=False),  # the DecisionRecord, serialized
    # Budget charges of an ALLOW: [[budget_key, bucket_us, metric, estimate]], so that
    # ReportExecution can replace the estimate with the reported usage.
    Column("charges", JSON, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    Index(None, "project_id", "create_time_us", "decision_id"),
    Index(None, "project_id", "agent_id", "create_time_us"),
)

# Which policies each decision matched (ListDecisions policy_id filter).
governance_decision_policies = Table(
    "governance_decision_policies",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("policy_id", String(ID), primary_key=True),
    Column("decision_id", String(ID), primary_key=True),
    Column("create_time_us", BigInteger, nullable=False),
    Index(
        "ix_governance_decision_policies_policy_time", "project_id", "policy_id", "create_time_us"
    ),
    # Retention deletes a decision's rows by project and decision (the key leads with policy_id).
    Index(None, "project_id", "decision_id"),
)
