"""auth tokens: an index on expires_at, for the hourly purge of expired credentials (security.retention)

Every login and refresh writes two token rows; without the index the purge would read the whole table each hour.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 11:00:00
"""
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_auth_tokens_expires_at', 'auth_tokens', ['expires_at'])


def downgrade():
    op.drop_index('ix_auth_tokens_expires_at', table_name='auth_tokens')
