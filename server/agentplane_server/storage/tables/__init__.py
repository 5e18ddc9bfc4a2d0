"""The relational schema (SQLAlchemy Core), one module per area. Alembic migrations in
storage/migrations create it; a test checks that the migrations and these tables agree.

Times are integer microseconds since the epoch (exact, index-friendly, identical on SQLite and
PostgreSQL). Every row belongs to a project. A new area adds its module here.
"""

from agentplane_server.storage.tables.base import ID, metadata
from agentplane_server.storage.tables.core import (
    api_keys,
    audit_events,
    idempotency_keys,
    projects,
    server_secrets,
)
from agentplane_server.storage.tables.feedback import feedback, feedback_categories
from agentplane_server.storage.tables.governance import (
    governance_approvals,
    governance_budget_spend,
    governance_decision_policies,
    governance_decisions,
    governance_policies,
    governance_projects,
    governance_trust_events,
    governance_trust_scores,
)
from agentplane_server.storage.tables.inference import inference_usage, inference_usage_daily
from agentplane_server.storage.tables.registry import (
    registry_agent_facets,
    registry_agents,
    registry_events,
    registry_projects,
)
from agentplane_server.storage.tables.sessions import messages, session_agents, sessions
from agentplane_server.storage.tables.traces import spans, trace_agents, trace_models, traces

__all__ = [
    "ID",
    "api_keys",
    "audit_events",
    "feedback",
    "feedback_categories",
    "governance_approvals",
    "governance_budget_spend",
    "governance_decision_policies",
    "governance_decisions",
    "governance_policies",
    "governance_projects",
    "governance_trust_events",
    "governance_trust_scores",
    "idempotency_keys",
    "inference_usage",
    "inference_usage_daily",
    "messages",
    "metadata",
    "projects",
    "registry_agent_facets",
    "registry_agents",
    "registry_events",
    "registry_projects",
    "server_secrets",
    "session_agents",
    "sessions",
    "spans",
    "trace_agents",
    "trace_models",
    "traces",
]
