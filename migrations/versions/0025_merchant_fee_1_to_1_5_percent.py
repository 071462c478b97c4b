"""fees: a seller's fee rate, and a trade's, is 0 or a merchant's 100-150 basis points (DESIGN R10: merchants pay 1-1.5 %)

Migration 0024 bounded the rate above; a rate between 1 and 99 basis points was still taken, where R10 knows no such
rate and a slip (15 typed for 150) is the likeliest way to get one (found by a design audit). Rows with such a rate
stop the upgrade with a message, rather than being changed behind anyone's back.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-06 17:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None

_TABLES = ('seller_settings', 'trades')


def _replace(condition):
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f'ck_{table}_fee_bp_range'), type_='check')
            batch_op.create_check_constraint(op.f(f'ck_{table}_fee_bp_range'), condition)


def upgrade():
    for table in _TABLES:
        count = op.get_bind().execute(sa.text(f'SELECT COUNT(*) FROM {table} WHERE fee_bp > 0 AND fee_bp < 100'))
        count = count.scalar()
        if count:
            raise RuntimeError(f'migration 0025: {count} rows of {table} have a fee between 1 and 99 basis points;'
                               ' look at them and correct them before upgrading')
    _replace('fee_bp = 0 OR (fee_bp >= 100 AND fee_bp <= 150)')


def downgrade():
    _replace('fee_bp >= 0 AND fee_bp <= 150')
