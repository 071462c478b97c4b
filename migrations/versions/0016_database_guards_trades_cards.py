"""database guards: a trade's money agrees with its state, decided disputes, ratings, top-ups; one account per card

Invariants the services keep, now refused by the database too when a row breaks them (found by an audit that wrote
bad rows with plain SQL):

* trades: the fee is a share of what was released; a trade is paid in full or not at all; nothing is paid before
  payment, something is after, and nothing is left in escrow once a trade is finished or closed;
* disputes: an open one has no outcome, a decided one has an outcome, a decision time and what the buyer got;
* ratings: nobody rates themselves;
* top-ups: a succeeded one names the transfer that credited it, no other one does;
* bank cards: an active card is bound to one account (it was once per account: two people of the same name, each
  verified with their own ID, could bind one card, and the second then draw on the first one's bank account).

Rows that break a rule stop the upgrade with a message naming how many and which rule, rather than being
changed behind anyone's back: they are for a person to look at.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 14:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

# As the models declare them (``wallet.escrow_models``, ``wallet.funds_models``), written out: a migration must not
# change when the models do.
_CHECKS = {
    'trades': [
        ('fee_within_released', 'fee_amount >= 0 AND fee_amount <= released_amount'),
        ('paid_in_full_or_not', 'paid_amount = 0 OR paid_amount = amount + shipping_fee'),
        ('money_matches_status',
         "(status <> 'WAIT_BUYER_PAY' OR paid_amount = 0)"
         " AND (status NOT IN ('WAIT_SELLER_SEND_GOODS', 'WAIT_BUYER_CONFIRM_GOODS', 'TRADE_FINISHED')"
         " OR paid_amount > 0)"
         " AND (status NOT IN ('TRADE_FINISHED', 'TRADE_CLOSED') OR released_amount + refunded_amount = paid_amount)"),
    ],
    'disputes': [
        ('decided_consistently',
         "(status = 'open' AND outcome IS NULL AND refund_amount IS NULL AND decided_at IS NULL)"
         " OR (status = 'decided' AND outcome IS NOT NULL AND refund_amount >= 0 AND decided_at IS NOT NULL)"),
    ],
    'ratings': [('not_oneself', 'rater_id <> ratee_id')],
    'topups': [('succeeded_has_transfer', "(status = 'succeeded') = (transfer_id IS NOT NULL)")],
}
_ACTIVE = sa.text('removed_at IS NULL')


def _refuse_rows_breaking(table, name, condition):
    count = op.get_bind().execute(sa.text(f'SELECT COUNT(*) FROM {table} WHERE NOT ({condition})')).scalar()
    if count:
        raise RuntimeError(f'migration 0016: {count} rows of {table} break the new rule {name} ({condition});'
                           ' look at them and correct them before upgrading')


def upgrade():
    for table, checks in _CHECKS.items():
        for name, condition in checks:
            _refuse_rows_breaking(table, name, condition)
    shared = op.get_bind().execute(sa.text(
        'SELECT COUNT(*) FROM (SELECT card_hash FROM bank_cards WHERE removed_at IS NULL'
        ' GROUP BY card_hash HAVING COUNT(*) > 1) AS shared')).scalar()
    if shared:
        raise RuntimeError(f'migration 0016: {shared} cards are bound to more than one account; unbind all but the'
                           " holder's before upgrading")
    for table, checks in _CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, condition in checks:
                batch_op.create_check_constraint(op.f(f'ck_{table}_{name}'), condition)
    with op.batch_alter_table('bank_cards', schema=None) as batch_op:
        batch_op.drop_index('uq_bank_cards_active_user_card', sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
        batch_op.create_index('uq_bank_cards_active_card', ['card_hash'], unique=True, sqlite_where=_ACTIVE,
                              postgresql_where=_ACTIVE)


def downgrade():
    with op.batch_alter_table('bank_cards', schema=None) as batch_op:
        batch_op.drop_index('uq_bank_cards_active_card', sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
        batch_op.create_index('uq_bank_cards_active_user_card', ['user_id', 'card_hash'], unique=True,
                              sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
    for table, checks in _CHECKS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, _condition in checks:
                batch_op.drop_constraint(op.f(f'ck_{table}_{name}'), type_='check')
