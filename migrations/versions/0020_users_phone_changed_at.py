"""users: when the account last moved to another number (``phone_changed_at``)

The login password alone (with a session) moves an account to a number of one's choosing, and an SMS code sent
there reset the payment password: either password alone moved money (R2). An SMS reset of the payment password now
waits ``PAYMENT_RESET_AFTER_PHONE_CHANGE_HOURS`` after a phone change, which needs to know when it happened. Accounts
that changed their number before this migration have no time recorded and are not held back.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 17:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('users', sa.Column('phone_changed_at', sa.DateTime(), nullable=True))


def downgrade():
    op.drop_column('users', 'phone_changed_at')  # SQLite drops a column in place since 3.35: no table rebuilt
