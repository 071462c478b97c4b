"""alerts: the partial index of lock alerts holds the recovery locks' alerts too

``/metrics`` counts lock events from the lock alerts (``wallet_lock_events``) through ``ix_alerts_lock_events``, which
held only ``login_locked`` and ``payment_locked``: the ``recovery_locked`` alerts of migration 0031's lock kind could
not be counted without reading the whole outbox, and were not counted. The index is made again with the three events.
Building it reads the alerts table once, and writes to that table wait meanwhile: dispatchers' and Twilio's delivery
callbacks'. Payments and every other request that announces something write ``alert_events``, which does not wait.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-07 23:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0034'
down_revision = '0033'
branch_labels = None
depends_on = None


def _index(events):
    where = sa.text(f"event IN {events!r}")
    op.drop_index('ix_alerts_lock_events', table_name='alerts')
    op.create_index('ix_alerts_lock_events', 'alerts', ['event'], postgresql_where=where, sqlite_where=where)


def upgrade():
    _index(('login_locked', 'payment_locked', 'recovery_locked'))


def downgrade():
    _index(('login_locked', 'payment_locked'))
