"""fees: a seller's fee rate, and a trade's, is at most 150 basis points (DESIGN R10: merchants pay 1-1.5 %)

The database allowed any rate up to 100 %, as did ``flask users set-fee``: a slip of one digit (1500 for 150) charged
a merchant 15 % of every trade, and 10000 took the whole of it (found by an audit). Rows above the new bound stop the
upgrade with a message, rather than being changed behind anyone's back.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

_TABLES = ('seller_settings', 'trades')


def _replace(bound):
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f'ck_{table}_fee_bp_range'), type_='check')
            batch_op.create_check_constraint(op.f(f'ck_{table}_fee_bp_range'), f'fee_bp >= 0 AND fee_bp <= {bound}')


def upgrade():
    for table in _TABLES:
        count = op.get_bind().execute(sa.text(f'SELECT COUNT(*) FROM {table} WHERE fee_bp > 150')).scalar()
        if count:
            raise RuntimeError(f'migration 0024: {count} rows of {table} have a fee above 150 basis points;'
                               ' look at them and correct them before upgrading')
    _replace(150)


def downgrade():
    _replace(10000)
