"""trades: a flag saying one of the trade's refunds is open

Shipping, confirming (by the buyer or the sweeper) and extending are refused while a refund is open. The flag
lives on the trade row, which every one of those steps locks and reads anyway: reading it there costs no query
of its own, and it cannot be missed by a step racing a refund request (a request sets it in the same
transaction that opens the refund, under the same row lock). The refunds table stays the record of each
refund; ``flask wallet check`` reports a trade whose flag disagrees with it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_OPEN = ("'WAIT_SELLER_AGREE', 'SELLER_REFUSE_BUYER', 'WAIT_BUYER_RETURN_GOODS', 'WAIT_SELLER_CONFIRM_GOODS'")


# Plain ALTER TABLE on both databases (SQLite adds and drops a column in place): a batch operation would copy
# the trades table, which SQLite refuses while refunds, disputes and ratings refer to it.
def upgrade():
    op.add_column('trades', sa.Column('refund_open', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE trades SET refund_open = true WHERE EXISTS (SELECT 1 FROM refunds r"
               f" WHERE r.trade_id = trades.id AND r.status IN ({_OPEN}))")


def downgrade():
    op.drop_column('trades', 'refund_open')
