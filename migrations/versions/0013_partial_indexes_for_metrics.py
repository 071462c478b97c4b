"""alerts and credential locks: partial indexes, so /metrics and the dispatcher's claim never read a whole table

- ``ix_alerts_due`` holds only the alerts still to send (``pending``, ``sending``), keyed by when they fall due:
  it stays as small as the queue, and a claim reads its batch off the front in order instead of sorting every
  due row (after a provider outage, the whole backlog at each claim).
- ``ix_alerts_failed``, ``ix_alerts_in_doubt``, ``ix_alerts_lock_events`` and ``ix_credential_locks_locked`` hold
  the rare rows the gauges count (failed alerts, re-sends in doubt, lock alerts, secrets ever locked). Before, every
  scrape counted the outbox by status and summed its re-sends over all rows, and counted lock events and locked
  secrets the same way.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 12:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_PARTIAL = [
    ('alerts', 'ix_alerts_due', ['next_attempt_at'], "status IN ('pending', 'sending')"),
    ('alerts', 'ix_alerts_failed', ['id'], "status = 'failed'"),
    ('alerts', 'ix_alerts_in_doubt', ['id'], "resends_in_doubt > 0"),
    ('alerts', 'ix_alerts_lock_events', ['event'], "event IN ('login_locked', 'payment_locked')"),
    ('credential_locks', 'ix_credential_locks_locked', ['locked_until'], "hard_locked OR locked_until IS NOT NULL"),
]


def upgrade():
    op.drop_index('ix_alerts_due', table_name='alerts')
    for table, name, columns, where in _PARTIAL:
        op.create_index(name, table, columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def downgrade():
    for table, name, _columns, _where in reversed(_PARTIAL):
        op.drop_index(name, table_name=table)
    op.create_index('ix_alerts_due', 'alerts', ['status', 'next_attempt_at'])
