"""trades: a partial index of the paid trades waiting for their seller to ship, by buyer and seller

A payment refuses a buyer's eleventh trade waiting for one seller to ship (``ESCROW_MAX_UNSHIPPED_TRADES_PER_SELLER``),
counting them first. Through ``ix_trades_buyer`` that count read every trade the buyer ever made; ``ix_trades_unshipped``
holds only the trades in ``WAIT_SELLER_SEND_GOODS``, so it stays the size of what waits to be shipped.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07 20:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0032'
down_revision = '0031'
branch_labels = None
depends_on = None

_UNSHIPPED = "status = 'WAIT_SELLER_SEND_GOODS'"


def upgrade():
    op.create_index('ix_trades_unshipped', 'trades', ['buyer_id', 'seller_id'],
                    postgresql_where=sa.text(_UNSHIPPED), sqlite_where=sa.text(_UNSHIPPED))


def downgrade():
    op.drop_index('ix_trades_unshipped', table_name='trades')
