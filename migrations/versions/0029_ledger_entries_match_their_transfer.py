"""ledger entries: each matches its transfer and carries its account's balance after it

A ledger entry is one side of a transfer as its account sees it (0002). The database took an entry that named no side
of its transfer, had the wrong sign or amount (a debit written as a credit), another kind, or a ``balance_after``
other than its account's balance; only the code, and afterwards ``flask wallet check``, kept them out. Statements are
read from these rows, so a wrong one shows a user money that is not there. A trigger now refuses, on insert, an entry
that does not match its transfer (account and counterparty are the transfer's debit and credit account or the
reverse, the amount is minus the transfer's amount on the debit side and the amount on the credit side, the kind is
the transfer's) or whose ``balance_after`` is not its account's posted balance (credits less debits) once the
statement is done. Both ledger paths update the accounts before they write the entries, in the same statement
(PostgreSQL's one-statement transfer) or an earlier one.

The trigger runs after each row; on PostgreSQL an AFTER ROW trigger fires once the whole statement is done, so it sees
the one-statement transfer's transfer row and account updates, written by the same statement in parts that do not
see each other's rows until it ends. A statement-level trigger over the statement's new rows (a transition table)
cost more: PostgreSQL plans a query over a transition table again at every run (measured with bench/ledger.py: the
PostgreSQL backend's CPU per transfer rose from about 0.45 ms to 0.63-0.87 ms with it, to 0.57-0.86 ms with this
one).
That each transfer has exactly its two entries, and that the balances run on from entry to entry, stay ``flask wallet
check``'s: the first would need an index on ``transfer_id`` the ledger's writes would pay for.

Entries that break the rule stop the upgrade with a message naming how many, as in 0016.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 09:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None


def _not_its_transfers_side(row: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = {row}.transfer_id AND t.kind = {row}.kind"
            f" AND (({row}.account_id = t.debit_account_id AND {row}.counterparty_account_id = t.credit_account_id"
            f" AND {row}.amount = -t.amount)"
            f" OR ({row}.account_id = t.credit_account_id AND {row}.counterparty_account_id = t.debit_account_id"
            f" AND {row}.amount = t.amount)))")


def _not_its_accounts_balance(row: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = {row}.account_id"
            f" AND a.credits_posted - a.debits_posted = {row}.balance_after)")


_MESSAGE = ("a ledger entry is one side of its transfer (account, counterparty, signed amount and kind) and carries its"
            " account''s posted balance after it")
_BROKEN = {
    'ledger entries not matching their transfer':
        'SELECT COUNT(*) FROM ledger_entries x WHERE ' + _not_its_transfers_side('x'),
    'ledger entries whose balance_after is not the running sum of their account':
        'SELECT COUNT(*) FROM (SELECT balance_after, SUM(amount) OVER (PARTITION BY account_id ORDER BY id'
        ' ROWS UNBOUNDED PRECEDING) AS running FROM ledger_entries) AS e WHERE balance_after <> running',
}

PG_FUNCTION = f"""
CREATE FUNCTION ledger_entries_match_their_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_not_its_transfers_side('NEW')} OR {_not_its_accounts_balance('NEW')} THEN
        RAISE EXCEPTION 'ledger entry %: {_MESSAGE}', NEW.id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$"""
# AFTER, so that it sees the rest of the statement: the one-statement transfer writes the transfer, the accounts and
# the entries in one statement whose parts see each other's rows only once it ends.
PG_TRIGGER = ("CREATE TRIGGER ledger_entries_match_their_transfer AFTER INSERT ON ledger_entries"
              " FOR EACH ROW EXECUTE FUNCTION ledger_entries_match_their_transfer()")
SQLITE_TRIGGER = ("CREATE TRIGGER ledger_entries_match_their_transfer AFTER INSERT ON ledger_entries"
                  f" WHEN {_not_its_transfers_side('NEW')} OR {_not_its_accounts_balance('NEW')}"
                  f" BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END")


def upgrade():
    for what, count_sql in _BROKEN.items():
        count = op.get_bind().execute(sa.text(count_sql)).scalar()
        if count:
            raise RuntimeError(f'migration 0029: {count} {what}; look at them and correct them before upgrading')
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
    elif dialect == 'sqlite':
        op.execute(SQLITE_TRIGGER)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS ledger_entries_match_their_transfer ON ledger_entries')
        op.execute('DROP FUNCTION IF EXISTS ledger_entries_match_their_transfer()')
    elif dialect == 'sqlite':
        op.execute('DROP TRIGGER IF EXISTS ledger_entries_match_their_transfer')
