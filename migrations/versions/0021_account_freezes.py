"""account freezes: staff stop an account's money from leaving it (R13)

One row per freeze; a lifted freeze keeps its row with ``lifted_at`` (the history is evidence), and a partial
unique index allows one active freeze per account. ``security.freezes`` reads and writes it; a payment of a frozen
account is refused before its password is checked, and a withdrawal not yet handed to the bank is failed back.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 20:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

_ACTIVE = sa.text('lifted_at IS NULL')


def upgrade():
    op.create_table(
        'account_freezes',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.String(length=40), nullable=False),
        sa.Column('reason', sa.String(length=200), nullable=False),
        sa.Column('frozen_at', sa.DateTime(), nullable=False),
        sa.Column('lifted_at', sa.DateTime(), nullable=True),
        sa.CheckConstraint('length(reason) > 0', name=op.f('ck_account_freezes_has_reason')),
        sa.CheckConstraint('lifted_at IS NULL OR lifted_at >= frozen_at',
                           name=op.f('ck_account_freezes_lifted_after_frozen')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_account_freezes_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_account_freezes')),
    )
    op.create_index('uq_account_freezes_active', 'account_freezes', ['user_id'], unique=True,
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)


def downgrade():
    # A freeze in force would be lost with the table, and the account unfrozen without anyone lifting it (the table
    # comes back empty on the way up): refuse until staff lift it (found by an audit; as 0023 refuses for its events).
    frozen = op.get_bind().execute(sa.text('SELECT count(*) FROM account_freezes WHERE lifted_at IS NULL')).scalar()
    if frozen:
        raise RuntimeError(f'{frozen} accounts are frozen; at head, lift their freezes (flask users frozen, then'
                           ' unfreeze PHONE) before downgrading past 0021')
    op.drop_index('uq_account_freezes_active', table_name='account_freezes', postgresql_where=_ACTIVE,
                  sqlite_where=_ACTIVE)
    op.drop_table('account_freezes')
