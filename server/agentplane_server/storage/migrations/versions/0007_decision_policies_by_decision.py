"""index governance_decision_policies by decision, for retention

Revision ID: 0007
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
# The table is created by 0004, on a sibling branch: run after it.
depends_on: str | Sequence[str] | None = "0004"


def upgrade() -> None:
    with op.batch_alter_table("governance_decision_policies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_governance_decision_policies_project_id_decision_id"),
            ["project_id", "decision_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("governance_decision_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_governance_decision_policies_project_id_decision_id"))
