"""alert events: the outbox a change writes, one row per transaction, which the dispatcher turns into alerts

A payment announced to both parties used to write two ``alerts`` rows, each with three index entries and two CHECK
constraints, in the payment's own transaction: 9-12 % of a transfer's time (``bench/notify.py``). The change now
writes one narrow row here holding every message it announces (already rendered), and a dispatcher expands it
into ``alerts`` rows, deleting it in the same transaction: exactly once, off the payment's path.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('alert_events',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('message_count', sa.SmallInteger(), nullable=False),
    sa.Column('messages', sa.Text(), nullable=False),
    sa.CheckConstraint('message_count > 0', name=op.f('ck_alert_events_message_count_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_events'))
    )


def downgrade():
    # Events not yet expanded would be lost with the table, and the alerts in them never sent: refuse until a
    # dispatcher has expanded them (``flask notifications dispatch --once``).
    waiting = op.get_bind().execute(sa.text('SELECT count(*) FROM alert_events')).scalar()
    if waiting:
        raise RuntimeError(f'{waiting} alert events wait to be expanded; run the dispatcher before downgrading')
    op.drop_table('alert_events')
