"""session agent ids on the session row

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-21 09:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_ids", sa.JSON(), server_default="[]", nullable=False))
    # Fill it from session_agents for sessions that already exist.
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT project_id, session_id, agent_id FROM session_agents "
            "ORDER BY project_id, session_id, first_sequence, agent_id"
        )
    ).all()
    by_session: dict[tuple[str, str], list[str]] = {}
    for project_id, session_id, agent_id in rows:
        by_session.setdefault((project_id, session_id), []).append(agent_id)
    sessions = sa.table(
        "sessions",
        sa.column("project_id"),
        sa.column("session_id"),
        sa.column("agent_ids", sa.JSON),
    )
    for (project_id, session_id), agent_ids in by_session.items():
        connection.execute(
            sessions.update()
            .where(sessions.c.project_id == project_id, sessions.c.session_id == session_id)
            .values(agent_ids=agent_ids)
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("agent_ids")
