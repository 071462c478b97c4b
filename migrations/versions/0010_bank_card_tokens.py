"""bank cards: keep the bank's token for a card instead of its full number

A bound card is now linked at its bank, which answers with a token; debits and payouts name the token, so the
full card number is no longer stored anywhere on our side. Cards bound before this revision are linked again
here the way the sandbox bank (the only gateway so far) issues tokens; with a real bank, re-link them through
its API before running this. Downgrading cannot bring the numbers back: the cards keep their rows but must be
bound again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 19:10:00
"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_cards = sa.table('bank_cards', sa.column('id', sa.String), sa.column('bank_code', sa.String),
                  sa.column('card_number', sa.String), sa.column('bank_token', sa.String),
                  sa.column('removed_at', sa.DateTime))


def upgrade():
    with op.batch_alter_table('bank_cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bank_token', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    for card in conn.execute(sa.select(_cards.c.id, _cards.c.bank_code, _cards.c.card_number)
                             .where(_cards.c.card_number.is_not(None))):
        token = f"sim-{card.bank_code}-{secrets.token_hex(12)}-{card.card_number[-4:]}"
        conn.execute(_cards.update().where(_cards.c.id == card.id).values(bank_token=token))
    with op.batch_alter_table('bank_cards', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_bank_cards_active_card_has_number'), type_='check')
        batch_op.drop_column('card_number')
        batch_op.create_check_constraint(op.f('ck_bank_cards_active_card_has_token'), 'removed_at IS NOT NULL OR bank_token IS NOT NULL')


def downgrade():
    with op.batch_alter_table('bank_cards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('card_number', sa.String(length=19), nullable=True))
    op.execute(_cards.update().where(_cards.c.removed_at.is_(None)).values(removed_at=sa.func.current_timestamp()))
    with op.batch_alter_table('bank_cards', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_bank_cards_active_card_has_token'), type_='check')
        batch_op.drop_column('bank_token')
        batch_op.create_check_constraint(op.f('ck_bank_cards_active_card_has_number'), 'removed_at IS NOT NULL OR card_number IS NOT NULL')
