"""alerts: server defaults for status, attempts and sensitive

A new alert is written on every payment's path; with these defaults its INSERT names only what varies from
one alert to the next (three parameters fewer per row).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 16:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.alter_column('status', existing_type=sa.String(length=16), server_default='pending')
        batch_op.alter_column('attempts', existing_type=sa.Integer(), server_default='0')
        batch_op.alter_column('sensitive', existing_type=sa.Boolean(), server_default=sa.false())


def downgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.alter_column('sensitive', existing_type=sa.Boolean(), server_default=None)
        batch_op.alter_column('attempts', existing_type=sa.Integer(), server_default=None)
        batch_op.alter_column('status', existing_type=sa.String(length=16), server_default=None)
