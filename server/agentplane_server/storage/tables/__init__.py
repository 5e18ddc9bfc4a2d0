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
from agentplane_server.storage.tables.sessions import messages, session_agents, sessions

__all__ = [
    "ID",
    "api_keys",
    "audit_events",
    "idempotency_keys",
    "messages",
    "metadata",
    "projects",
    "server_secrets",
    "session_agents",
    "sessions",
]
