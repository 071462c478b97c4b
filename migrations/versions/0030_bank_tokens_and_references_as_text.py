"""bank cards, top-ups, withdrawals: the bank's card token and its reference for a debit or payout are text of any length

``bank_cards.bank_token`` and ``topups`` / ``withdrawals.bank_reference`` hold what the bank adapter answers, opaque
strings the bank chooses; they were ``VARCHAR(64)``. A bank whose token or reference is longer (SQLite never enforced
the length, PostgreSQL does) made binding a card a 500, and worse, made a top-up the bank had debited, or a payout it
had accepted, fail to record on every retry: the money left the card and never reached the wallet. They are ``TEXT``
now; PostgreSQL changes the type without rewriting the table (VARCHAR to TEXT is binary coercible).

SQLite cannot change a column's type in place: each table is copied (a batch migration), and SQLite's copy drops the
triggers on it (0018, 0027) and refuses to rename the copy while a trigger elsewhere names the table, so the triggers
that name these tables are dropped first and made again, from their own SQL, afterwards.

Going down refuses while a row holds a token or reference longer than 64 characters, naming how many: cutting one
would break the card, or the record of what the bank did.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07 16:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0030'
down_revision = '0029'
branch_labels = None
depends_on = None

_COLUMNS = (('bank_cards', 'bank_token'), ('topups', 'bank_reference'), ('withdrawals', 'bank_reference'))


def _retype(old_type, new_type):
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        for table, column in _COLUMNS:
            op.alter_column(table, column, type_=new_type, existing_type=old_type, existing_nullable=True)
        return
    tables = [table for table, _column in _COLUMNS]
    triggers = [(name, sql) for name, table, sql in bind.exec_driver_sql(
                    "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY rowid")
                if table in tables or any(other in sql for other in tables)]
    for name, _sql in triggers:
        op.execute(f'DROP TRIGGER {name}')
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, type_=new_type, existing_type=old_type, existing_nullable=True)
    for _name, sql in triggers:
        op.execute(sql)


def upgrade():
    _retype(sa.String(length=64), sa.Text())


def downgrade():
    for table, column in _COLUMNS:
        count = op.get_bind().execute(sa.text(f'SELECT COUNT(*) FROM {table} WHERE length({column}) > 64')).scalar()
        if count:
            raise RuntimeError(f'migration 0030: {count} rows of {table} have a {column} longer than 64 characters,'
                               ' which the older revision cannot hold; stay at 0030 or later')
    _retype(sa.Text(), sa.String(length=64))
