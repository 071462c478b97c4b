"""trades: the sweeper's indexes hold only the trades waiting on their deadline

``ix_trades_pay_deadline`` and ``ix_trades_confirm_deadline`` were ``(status, deadline)`` over every trade ever
opened, and every step of a trade (pay, ship, confirm) wrote an entry into both. The reminder look-up had no index
of its own and read every trade awaiting confirmation at each sweep (every 5 s). Now each index holds only the
trades its look-up is about: unpaid ones by pay deadline, shipped ones by confirm deadline, and shipped ones not yet
reminded by reminder time.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 12:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_PARTIAL = [
    ('ix_trades_pay_deadline', ['pay_deadline'], "status = 'WAIT_BUYER_PAY'"),
    ('ix_trades_confirm_deadline', ['confirm_deadline'], "status = 'WAIT_BUYER_CONFIRM_GOODS'"),
    ('ix_trades_remind_at', ['remind_at'], "status = 'WAIT_BUYER_CONFIRM_GOODS' AND NOT reminded"),
]


def upgrade():
    op.drop_index('ix_trades_pay_deadline', table_name='trades')
    op.drop_index('ix_trades_confirm_deadline', table_name='trades')
    for name, columns, where in _PARTIAL:
        op.create_index(name, 'trades', columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def downgrade():
    for name, _columns, _where in _PARTIAL:
        op.drop_index(name, table_name='trades')
    op.create_index('ix_trades_confirm_deadline', 'trades', ['status', 'confirm_deadline'])
    op.create_index('ix_trades_pay_deadline', 'trades', ['status', 'pay_deadline'])
