"""withdrawals: until when a payout a worker submitted may still reach the bank (``submitted_until``)

A worker whose claim ran out while its payout was on its way to the bank left the next worker to ask about it; for a
frozen account, or a withdrawal past its maximum age, that worker only asks, and the bank, which had not received the
payout yet, said it had none: the withdrawal was failed back to the wallet, and the payout then arrived and was paid
out as well (found by the time-of-check audit). Such an answer now counts only once no payout can still arrive.

A plain ADD COLUMN, also on SQLite, so the table is not recreated.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 18:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('withdrawals', sa.Column('submitted_until', sa.DateTime(), nullable=True))


def downgrade():
    if op.get_bind().dialect.name == 'sqlite':
        op.execute('ALTER TABLE withdrawals DROP COLUMN submitted_until')
    else:
        op.drop_column('withdrawals', 'submitted_until')
