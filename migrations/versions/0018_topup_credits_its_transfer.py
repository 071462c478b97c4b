"""top-ups: a succeeded top-up's transfer credits the top-up's amount, in its currency, to its owner's wallet

0017 made ``topups.transfer_id`` name a transfer that exists; that transfer could still credit another amount, in
another currency, or to someone else's account than the top-up says was charged at the bank (an audit proved it with
plain SQL). A trigger on ``topups`` now refuses such a row. It sits on the top-ups table, not on ``transfers``: a
foreign key to ``transfers (id, amount, currency)`` would have added an index to every transfer's write, and
top-ups are few beside transfers.

Rows that break the rule stop the upgrade with a message, as in 0016 and 0017.

SQLite drops a table's triggers when a batch migration recreates it: a later migration that does so to ``topups``
must create these again (as 0002 explains for the ledger's).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 15:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

# The top-up (NEW) is credited by its transfer: the transfer exists (0017), and credits its amount in its currency
# to a wallet of the top-up's owner.
def _credited(row: str) -> str:
    return ("EXISTS (SELECT 1 FROM transfers t JOIN ledger_accounts a ON a.id = t.credit_account_id"
            f" WHERE t.id = {row}.transfer_id AND t.amount = {row}.amount AND t.currency = {row}.currency"
            f" AND a.kind = 'wallet' AND a.owner = {row}.user_id)")


_CREDITED = _credited("NEW")
_MESSAGE = "a succeeded top-up's transfer credits the top-up's amount, in its currency, to its owner's wallet"

_BROKEN = "SELECT COUNT(*) FROM topups u WHERE u.transfer_id IS NOT NULL AND NOT " + _credited("u")

PG_FUNCTION = f"""
CREATE FUNCTION topup_credited_by_its_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.transfer_id IS NOT NULL AND NOT {_CREDITED} THEN
        RAISE EXCEPTION 'top-up %: {_MESSAGE.replace("'", "''")}', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$"""
PG_TRIGGER = ("CREATE TRIGGER topups_credited_by_their_transfer BEFORE INSERT OR UPDATE OF transfer_id, amount,"
              " currency, user_id ON topups FOR EACH ROW EXECUTE FUNCTION topup_credited_by_its_transfer()")
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER topups_credited_by_their_transfer_{when} BEFORE {event} ON topups"
    f" WHEN NEW.transfer_id IS NOT NULL AND NOT {_CREDITED}"
    f" BEGIN SELECT RAISE(ABORT, '{_MESSAGE.replace(chr(39), chr(39) * 2)}'); END"
    for when, event in (("insert", "INSERT"), ("update", "UPDATE OF transfer_id, amount, currency, user_id"))
]


def upgrade():
    count = op.get_bind().execute(sa.text(_BROKEN)).scalar()
    if count:
        raise RuntimeError(f'migration 0018: {count} top-ups whose transfer does not credit the top-up\'s amount, in its'
                           ' currency, to its owner\'s wallet; look at them and correct them before upgrading')
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    elif dialect == 'sqlite':
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS topups_credited_by_their_transfer ON topups')
        op.execute('DROP FUNCTION IF EXISTS topup_credited_by_its_transfer()')
    elif dialect == 'sqlite':
        for when in ('insert', 'update'):
            op.execute(f'DROP TRIGGER IF EXISTS topups_credited_by_their_transfer_{when}')
