"""references: a trade's escrow account is its own; a top-up's transfer exists; a withdrawal pays out its hold

Three rows that name ledger rows could name the wrong one, and the database took it:

* ``trades.escrow_account_id`` could name a user's wallet, another trade's escrow account, an account in another
  currency, or nothing. The release and refund steps move money out of whatever it names, and the books still
  balance, so ``flask wallet check`` saw nothing. It now refers to ``(id, owner, currency)`` of a ledger account:
  the account must be owned by the trade and hold the trade's currency. The key is deferred to commit, since a
  trade is opened with its account written at commit (after the trade's row, on SQLite).
* ``topups.transfer_id`` (which 0016 requires of a succeeded top-up) could name a transfer that does not exist. It
  now refers to ``transfers``.
* a withdrawal's ``amount`` (what the bank is told to pay out) could differ from its hold's (what the ledger takes
  from the wallet when the hold posts), or be in another currency. ``(hold_id, amount, currency)`` now refers to the
  hold's ``(id, amount, currency)``, which a hold never changes (the 0002 trigger).

Rows that break a rule stop the upgrade with a message naming how many and which rule, as in 0016.

On PostgreSQL the new unique indexes on ``ledger_accounts`` and ``holds`` and the foreign keys' validation hold their
locks for as long as it takes to read those tables once.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

_BROKEN = {
    'trades whose escrow account is not an account of the trade in its currency':
        'SELECT COUNT(*) FROM trades t WHERE t.escrow_account_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM'
        ' ledger_accounts a WHERE a.id = t.escrow_account_id AND a.owner = t.id AND a.currency = t.currency)',
    'top-ups naming a transfer that does not exist':
        'SELECT COUNT(*) FROM topups u WHERE u.transfer_id IS NOT NULL'
        ' AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = u.transfer_id)',
    'withdrawals whose amount or currency is not their hold\'s':
        'SELECT COUNT(*) FROM withdrawals w JOIN holds h ON h.id = w.hold_id'
        ' WHERE w.amount <> h.amount OR w.currency <> h.currency',
}


def upgrade():
    for what, count_sql in _BROKEN.items():
        count = op.get_bind().execute(sa.text(count_sql)).scalar()
        if count:
            raise RuntimeError(f'migration 0017: {count} {what}; look at them and correct them before upgrading')
    op.create_index('uq_ledger_accounts_id_owner_currency', 'ledger_accounts', ['id', 'owner', 'currency'],
                    unique=True)
    with op.batch_alter_table('trades', schema=None) as batch_op:
        batch_op.create_foreign_key(op.f('fk_trades_escrow_account_id_ledger_accounts'), 'ledger_accounts',
                                    ['escrow_account_id', 'id', 'currency'], ['id', 'owner', 'currency'],
                                    deferrable=True, initially='DEFERRED')
    with op.batch_alter_table('topups', schema=None) as batch_op:
        batch_op.create_foreign_key(op.f('fk_topups_transfer_id_transfers'), 'transfers', ['transfer_id'], ['id'])
    op.create_index('uq_holds_id_amount_currency', 'holds', ['id', 'amount', 'currency'], unique=True)
    with op.batch_alter_table('withdrawals', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_withdrawals_hold_amount_currency', 'holds', ['hold_id', 'amount', 'currency'],
                                    ['id', 'amount', 'currency'])


def downgrade():
    with op.batch_alter_table('withdrawals', schema=None) as batch_op:
        batch_op.drop_constraint('fk_withdrawals_hold_amount_currency', type_='foreignkey')
    op.drop_index('uq_holds_id_amount_currency', table_name='holds')
    with op.batch_alter_table('topups', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('fk_topups_transfer_id_transfers'), type_='foreignkey')
    with op.batch_alter_table('trades', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('fk_trades_escrow_account_id_ledger_accounts'), type_='foreignkey')
    op.drop_index('uq_ledger_accounts_id_owner_currency', table_name='ledger_accounts')
