"""feedback and traces

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('feedback',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('feedback_id', sa.String(length=128), nullable=False),
    sa.Column('rating', sa.SmallInteger(), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('correction', sa.Text(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('source', sa.SmallInteger(), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('agent_id', sa.String(length=128), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('message_id', sa.String(length=128), nullable=False),
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=True),
    sa.Column('dedupe_key', sa.String(length=80), nullable=True),
    sa.Column('create_time_us', sa.BigInteger(), nullable=False),
    sa.Column('update_time_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'feedback_id', name=op.f('pk_feedback'))
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_project_id_agent_id_create_time_us'), ['project_id', 'agent_id', 'create_time_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_project_id_create_time_us_feedback_id'), ['project_id', 'create_time_us', 'feedback_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_project_id_dedupe_key'), ['project_id', 'dedupe_key'], unique=True)
        batch_op.create_index(batch_op.f('ix_feedback_project_id_rating_create_time_us_feedback_id'), ['project_id', 'rating', 'create_time_us', 'feedback_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_project_id_session_id_create_time_us'), ['project_id', 'session_id', 'create_time_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_project_id_trace_id_create_time_us'), ['project_id', 'trace_id', 'create_time_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_project_id_user_id_create_time_us'), ['project_id', 'user_id', 'create_time_us'], unique=False)

    op.create_table('feedback_categories',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('feedback_id', sa.String(length=128), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'feedback_id', 'category', name=op.f('pk_feedback_categories'))
    )
    with op.batch_alter_table('feedback_categories', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_categories_project_id_category_feedback_id'), ['project_id', 'category', 'feedback_id'], unique=False)

    op.create_table('spans',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('span_id', sa.String(length=16), nullable=False),
    sa.Column('parent_span_id', sa.String(length=16), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('kind', sa.SmallInteger(), nullable=False),
    sa.Column('start_time_us', sa.BigInteger(), nullable=False),
    sa.Column('end_time_us', sa.BigInteger(), nullable=False),
    sa.Column('status_code', sa.SmallInteger(), nullable=False),
    sa.Column('status_message', sa.Text(), nullable=False),
    sa.Column('agent_id', sa.String(length=128), nullable=False),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('service_name', sa.String(length=256), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), nullable=False),
    sa.Column('cost_currency', sa.String(length=3), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('create_time_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'trace_id', 'span_id', name=op.f('pk_spans'))
    )
    op.create_table('trace_agents',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('agent_id', sa.String(length=128), nullable=False),
    sa.Column('first_start_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'trace_id', 'agent_id', name=op.f('pk_trace_agents'))
    )
    with op.batch_alter_table('trace_agents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trace_agents_project_id_agent_id_trace_id'), ['project_id', 'agent_id', 'trace_id'], unique=False)

    op.create_table('trace_models',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('first_start_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'trace_id', 'model', name=op.f('pk_trace_models'))
    )
    op.create_table('traces',
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('root_span_name', sa.Text(), nullable=False),
    sa.Column('root_start_us', sa.BigInteger(), nullable=True),
    sa.Column('session_id', sa.String(length=128), nullable=False),
    sa.Column('session_start_us', sa.BigInteger(), nullable=True),
    sa.Column('start_time_us', sa.BigInteger(), nullable=False),
    sa.Column('end_time_us', sa.BigInteger(), nullable=False),
    sa.Column('span_count', sa.BigInteger(), nullable=False),
    sa.Column('error_count', sa.BigInteger(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), nullable=False),
    sa.Column('cost_currency', sa.String(length=3), nullable=False),
    sa.Column('create_time_us', sa.BigInteger(), nullable=False),
    sa.Column('update_time_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', 'trace_id', name=op.f('pk_traces'))
    )
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_traces_project_id_session_id_start_time_us'), ['project_id', 'session_id', 'start_time_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_project_id_start_time_us_trace_id'), ['project_id', 'start_time_us', 'trace_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_project_id_update_time_us'), ['project_id', 'update_time_us'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_traces_project_id_update_time_us'))
        batch_op.drop_index(batch_op.f('ix_traces_project_id_start_time_us_trace_id'))
        batch_op.drop_index(batch_op.f('ix_traces_project_id_session_id_start_time_us'))

    op.drop_table('traces')
    op.drop_table('trace_models')
    with op.batch_alter_table('trace_agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trace_agents_project_id_agent_id_trace_id'))

    op.drop_table('trace_agents')
    op.drop_table('spans')
    with op.batch_alter_table('feedback_categories', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_categories_project_id_category_feedback_id'))

    op.drop_table('feedback_categories')
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_user_id_create_time_us'))
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_trace_id_create_time_us'))
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_session_id_create_time_us'))
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_rating_create_time_us_feedback_id'))
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_dedupe_key'))
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_create_time_us_feedback_id'))
        batch_op.drop_index(batch_op.f('ix_feedback_project_id_agent_id_create_time_us'))

    op.drop_table('feedback')
