"""inference usage records and daily totals

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-21 09:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inference_usage',
    sa.Column('usage_id', sa.String(length=128), nullable=False),
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('agent_id', sa.String(length=128), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('finish_reason', sa.Integer(), nullable=False),
    sa.Column('create_time_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('usage_id', name=op.f('pk_inference_usage'))
    )
    op.create_index(op.f('ix_inference_usage_project_id_agent_id_create_time_us'), 'inference_usage', ['project_id', 'agent_id', 'create_time_us'], unique=False)
    op.create_index(op.f('ix_inference_usage_project_id_create_time_us'), 'inference_usage', ['project_id', 'create_time_us'], unique=False)
    op.create_table('inference_usage_daily',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('requests', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'day', name=op.f('pk_inference_usage_daily'))
    )


def downgrade() -> None:
    op.drop_table('inference_usage_daily')
    op.drop_index(op.f('ix_inference_usage_project_id_create_time_us'), table_name='inference_usage')
    op.drop_index(op.f('ix_inference_usage_project_id_agent_id_create_time_us'), table_name='inference_usage')
    op.drop_table('inference_usage')
