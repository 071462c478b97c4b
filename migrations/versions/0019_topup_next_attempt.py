"""top-ups: when the worker may next ask the bank about a pending top-up (``next_attempt_at``)

The worker took the oldest pending top-ups, a batch every round, and asked the bank about each again at once: a
hundred top-ups waiting on a bank that does not answer filled every round, and a top-up the bank had already charged
(our process died before crediting it) waited for the outage to end. A top-up the worker could not finish now waits
before its next try, and the worker takes the due ones in the order of this column (NULL: never tried, due first).

A plain ADD COLUMN, also on SQLite, so the table is not recreated and 0018's triggers on it stay.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 17:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('topups', sa.Column('next_attempt_at', sa.DateTime(), nullable=True))


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        # DROP COLUMN, not a batch copy of the table: the copy would lose 0018's triggers.
        op.execute('ALTER TABLE topups DROP COLUMN next_attempt_at')
    else:
        op.drop_column('topups', 'next_attempt_at')
