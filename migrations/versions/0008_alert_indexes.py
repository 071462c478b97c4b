"""alerts: drop the user_id index (ix_alerts_user_recent covers it), provider_id index only where set

Writing an alert sits on every payment's path; each index on the table is one more to update per row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 13:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_SET = sa.text("provider_id IS NOT NULL")


def upgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_user_id')
        batch_op.drop_index('ix_alerts_provider_id')
        batch_op.create_index('ix_alerts_provider_id', ['provider_id'], unique=False, postgresql_where=_SET,
                              sqlite_where=_SET)


def downgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_provider_id')
        batch_op.create_index('ix_alerts_provider_id', ['provider_id'], unique=False)
        batch_op.create_index('ix_alerts_user_id', ['user_id'], unique=False)
