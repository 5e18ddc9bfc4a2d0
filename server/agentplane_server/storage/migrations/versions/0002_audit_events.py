"""audit events and key creators

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 09:21:33.948190
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('project_id', sa.String(length=128), nullable=False),
    sa.Column('actor_key_id', sa.String(length=128), nullable=False),
    sa.Column('actor_subject', sa.String(length=256), nullable=False),
    sa.Column('actor_project_id', sa.String(length=128), nullable=False),
    sa.Column('actor_role', sa.Integer(), nullable=False),
    sa.Column('actor_agent_id', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=128), nullable=False),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('create_time_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_project_id_create_time_us_event_id'), ['project_id', 'create_time_us', 'event_id'], unique=False)

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('creator_key_id', sa.String(length=128), server_default='', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('creator_key_id')

    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_project_id_create_time_us_event_id'))

    op.drop_table('audit_events')
