"""daily_payee_usage: how many payments to a phone number each payer made to each payee on a day

Every payment to a phone number texts the payee (``transfer_received``), and one of 1 fen costs the payer next to
nothing, so a payer could text anyone with an account without end at the platform's cost (found by an audit). A payment
now counts itself in this table with a conditional upsert and is refused past ``LIMIT_PAYMENTS_PER_PAYEE_DAILY``
(422 ``payee_limit_exceeded``). The background worker deletes the rows of days before yesterday, as it does
``daily_usage``'s.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-07 23:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0033'
down_revision = '0032'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'daily_payee_usage',
        sa.Column('payer_id', sa.String(length=40), nullable=False),
        sa.Column('payee_id', sa.String(length=40), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('payments', sa.Integer(), nullable=False),
        sa.CheckConstraint('payments > 0', name=op.f('ck_daily_payee_usage_payments_positive')),
        sa.ForeignKeyConstraint(['payer_id'], ['users.id'], name=op.f('fk_daily_payee_usage_payer_id_users')),
        sa.ForeignKeyConstraint(['payee_id'], ['users.id'], name=op.f('fk_daily_payee_usage_payee_id_users')),
        sa.PrimaryKeyConstraint('payer_id', 'payee_id', 'day', name=op.f('pk_daily_payee_usage')),
    )


def downgrade():
    op.drop_table('daily_payee_usage')
