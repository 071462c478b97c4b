"""users: when the login password was last recovered by SMS alone (``password_recovered_at``)

Whoever holds an account's SIM, and nothing else, recovered the login password, logged in on a device of their own
and reset the payment password by SMS within minutes: the SIM alone moved money (R2). After a recovery by SMS alone
the payment password is not reset by SMS, the phone not changed and no authenticator enrolled for
``SMS_RECOVERY_HOLD_HOURS``, which needs to know when the recovery happened. Accounts recovered before this migration
have no time recorded and are not held back.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 20:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('users', sa.Column('password_recovered_at', sa.DateTime(), nullable=True))


def downgrade():
    op.drop_column('users', 'password_recovered_at')  # SQLite drops a column in place since 3.35: no table rebuilt
