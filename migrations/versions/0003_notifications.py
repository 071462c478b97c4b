"""notifications: dispatcher claims and in-doubt hand-overs, provider delivery status, alerts by user

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25 10:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claim_token', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('in_flight_since', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('resends_in_doubt', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('provider_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('provider_error_code', sa.Integer(), nullable=True))
        batch_op.create_index('ix_alerts_user_recent', ['user_id', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_user_recent')
        batch_op.drop_column('provider_error_code')
        batch_op.drop_column('provider_status')
        batch_op.drop_column('resends_in_doubt')
        batch_op.drop_column('in_flight_since')
        batch_op.drop_column('claim_token')
