"""The agent registry: registered agents, their searchable card facets, and change events."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table

from agentplane_server.storage.tables.base import ID, metadata

# One row per registered agent. The card is kept whole as a serialized AgentCard (it is
# replaced as a whole and read back whole); what ListAgents filters on is copied into columns
# and into registry_agent_facets.
registry_agents = Table(
    "registry_agents",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("agent_id", String(ID), primary_key=True),
    Column("card", LargeBinary, nullable=False),
    Column("status", Integer, nullable=False),
    Column("lease_duration_us", BigInteger, nullable=False),
    Column("lease_expire_time_us", BigInteger, nullable=False),
    Column("remove_time_us", BigInteger, nullable=True),
    Column("last_heartbeat_time_us", BigInteger, nullable=False),
    Column("framework", String(64), nullable=False),
    Column("sdk_language", String(64), nullable=False),
    # Bit (1 << AgentCapability) for each capability the card has.
    Column("capabilities", Integer, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Index(None, "status", "lease_expire_time_us"),
    Index(None, "status", "remove_time_us"),
)

# Searchable values of a card, one row each: kind "skill" (skill id), "tag" (skill tag),
# "label" ("key=value") and "ext" (extension uri).
registry_agent_facets = Table(
    "registry_agent_facets",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("agent_id", String(ID), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("value", String(2400), primary_key=True),
    Index(None, "project_id", "kind", "value", "agent_id"),
)

# Per-project event counter: taking the next value locks the row until commit, so events of
# one project commit in sequence order and watchers that poll `seq > last` miss none.
registry_projects = Table(
    "registry_projects",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("event_seq", BigInteger, nullable=False),
)

# Registry changes for WatchAgents and for other replicas' in-memory views (kept for a short
# retention: the stream has no resume point).
registry_events = Table(
    "registry_events",
    metadata,
    Column("project_id", String(ID), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("agent_id", String(ID), nullable=False),
    Column("type", Integer, nullable=False),
    Column("removal_reason", Integer, nullable=False),
    Column("agent", LargeBinary, nullable=False),  # Agent after the change (REMOVED: last)
    Column("previous", LargeBinary, nullable=True),  # Agent before the change, if any
    Column("event_time_us", BigInteger, nullable=False),
    Index(None, "event_time_us"),
)
