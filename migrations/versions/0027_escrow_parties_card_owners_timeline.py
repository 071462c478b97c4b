"""guards: a trade's escrow money moves only between it and the trade's parties; a top-up or a withdrawal uses its own
user's card; a trade's timeline is append-only

Found by an audit that wrote rows the code never writes, with plain SQL on PostgreSQL, and saw them accepted with
``flask wallet check`` clean:

* a transfer out of a trade's escrow account to a third user's wallet (the trade then marked finished). DESIGN 3: the
  money held for a trade is used only for that trade. Money now enters a trade's escrow account (the one
  ``trades.escrow_account_id`` names, whose owner is the trade: 0017) only from the trade's buyer's wallet, and
  leaves it only for the buyer's wallet (a refund), the seller's wallet (a release) or the platform's fee account.
  An escrow account no trade holds is not covered: the ledger's own tests move money through such accounts, and the
  audit's other finding, money parked in one, is left (see the session's note).
* a withdrawal naming another user's card (the worker then paid the money out to that card), and a top-up naming
  another user's card as the one charged. The card must be the row's own user's.
* a timeline entry updated or deleted. The hash chain shows it (``flask escrow verify``), but the ledger's tables
  refuse such changes outright (0002), and the evidence of a dispute should too. As there, SQLite refuses UPDATE
  only (the test suite empties its tables with DELETE).

Triggers rather than foreign keys: on SQLite a new key means copying the table, which would drop its triggers (0018's
on ``topups``). Rows that break a rule stop the upgrade with a message naming how many and which rule, as in 0016.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 07:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


_HELD = "ledger_accounts e JOIN trades t ON t.id = e.owner AND t.escrow_account_id = e.id"


def _escrow_parties_broken(row: str) -> str:
    """True when transfer ``row`` moves money of a trade's escrow account other than between it and the trade's
    parties."""
    escrow_in = f"EXISTS (SELECT 1 FROM {_HELD} WHERE e.id = {row}.credit_account_id)"
    escrow_out = f"EXISTS (SELECT 1 FROM {_HELD} WHERE e.id = {row}.debit_account_id)"
    from_buyer = (f"EXISTS (SELECT 1 FROM ledger_accounts e JOIN trades t ON t.id = e.owner AND t.escrow_account_id = e.id"
                  f" JOIN ledger_accounts d ON d.id = {row}.debit_account_id"
                  f" WHERE e.id = {row}.credit_account_id AND d.kind = 'wallet' AND d.owner = t.buyer_id)")
    to_party = (f"EXISTS (SELECT 1 FROM ledger_accounts e JOIN trades t ON t.id = e.owner AND t.escrow_account_id = e.id"
                f" JOIN ledger_accounts c ON c.id = {row}.credit_account_id"
                f" WHERE e.id = {row}.debit_account_id AND (c.kind = 'fees'"
                f" OR (c.kind = 'wallet' AND c.owner IN (t.buyer_id, t.seller_id))))")
    return f"(({escrow_in} AND NOT {from_buyer}) OR ({escrow_out} AND NOT {to_party}))"


def _card_not_owned(row: str) -> str:
    return f"NOT EXISTS (SELECT 1 FROM bank_cards c WHERE c.id = {row}.card_id AND c.user_id = {row}.user_id)"


_ESCROW_MESSAGE = ("money enters a trade's escrow account only from the trade's buyer, and leaves it only for the buyer,"
                   " the seller or the platform's fee account")
_CARD_MESSAGE = "the card is not a card of the row's own user"
_TIMELINE_MESSAGE = "a trade's timeline is append-only"

_BROKEN = {
    'transfers moving escrow money other than between a trade and its parties':
        'SELECT COUNT(*) FROM transfers x WHERE ' + _escrow_parties_broken('x'),
    'top-ups naming a card of another user': 'SELECT COUNT(*) FROM topups x WHERE ' + _card_not_owned('x'),
    'withdrawals naming a card of another user': 'SELECT COUNT(*) FROM withdrawals x WHERE ' + _card_not_owned('x'),
}


def _quoted(message: str) -> str:
    return message.replace("'", "''")


PG_FUNCTIONS = [
    f"""
CREATE FUNCTION escrow_money_between_its_parties() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_escrow_parties_broken('NEW')} THEN
        RAISE EXCEPTION 'transfer %: {_quoted(_ESCROW_MESSAGE)}', NEW.id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$""",
    f"""
CREATE FUNCTION card_of_its_own_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_card_not_owned('NEW')} THEN
        RAISE EXCEPTION '% %: {_quoted(_CARD_MESSAGE)}', TG_TABLE_NAME, NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$""",
    f"""
CREATE FUNCTION timeline_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: {_quoted(_TIMELINE_MESSAGE)}', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$""",
]
PG_TRIGGERS = [
    "CREATE TRIGGER transfers_escrow_money_between_its_parties BEFORE INSERT ON transfers"
    " FOR EACH ROW EXECUTE FUNCTION escrow_money_between_its_parties()",
    "CREATE TRIGGER topups_card_of_its_own_user BEFORE INSERT OR UPDATE OF card_id, user_id ON topups"
    " FOR EACH ROW EXECUTE FUNCTION card_of_its_own_user()",
    "CREATE TRIGGER withdrawals_card_of_its_own_user BEFORE INSERT OR UPDATE OF card_id, user_id ON withdrawals"
    " FOR EACH ROW EXECUTE FUNCTION card_of_its_own_user()",
    "CREATE TRIGGER trade_timeline_append_only BEFORE UPDATE OR DELETE ON trade_timeline"
    " FOR EACH ROW EXECUTE FUNCTION timeline_refuse_change()",
]
SQLITE_TRIGGERS = [
    "CREATE TRIGGER transfers_escrow_money_between_its_parties BEFORE INSERT ON transfers"
    f" WHEN {_escrow_parties_broken('NEW')} BEGIN SELECT RAISE(ABORT, '{_quoted(_ESCROW_MESSAGE)}'); END",
    *(f"CREATE TRIGGER {table}_card_of_its_own_user_{when} BEFORE {event} ON {table}"
      f" WHEN {_card_not_owned('NEW')} BEGIN SELECT RAISE(ABORT, '{table}: {_quoted(_CARD_MESSAGE)}'); END"
      for table in ('topups', 'withdrawals')
      for when, event in (('insert', 'INSERT'), ('update', 'UPDATE OF card_id, user_id'))),
    "CREATE TRIGGER trade_timeline_append_only BEFORE UPDATE ON trade_timeline"
    f" BEGIN SELECT RAISE(ABORT, 'UPDATE on trade_timeline refused: {_quoted(_TIMELINE_MESSAGE)}'); END",
]


def upgrade():
    for what, count_sql in _BROKEN.items():
        count = op.get_bind().execute(sa.text(count_sql)).scalar()
        if count:
            raise RuntimeError(f'migration 0027: {count} {what}; look at them and correct them before upgrading')
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        for statement in PG_FUNCTIONS + PG_TRIGGERS:
            op.execute(statement)
    elif dialect == 'sqlite':
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        for trigger, table in (('transfers_escrow_money_between_its_parties', 'transfers'),
                               ('topups_card_of_its_own_user', 'topups'),
                               ('withdrawals_card_of_its_own_user', 'withdrawals'),
                               ('trade_timeline_append_only', 'trade_timeline')):
            op.execute(f'DROP TRIGGER IF EXISTS {trigger} ON {table}')
        for function in ('escrow_money_between_its_parties', 'card_of_its_own_user', 'timeline_refuse_change'):
            op.execute(f'DROP FUNCTION IF EXISTS {function}()')
    elif dialect == 'sqlite':
        for trigger in ('transfers_escrow_money_between_its_parties', 'topups_card_of_its_own_user_insert',
                        'topups_card_of_its_own_user_update', 'withdrawals_card_of_its_own_user_insert',
                        'withdrawals_card_of_its_own_user_update', 'trade_timeline_append_only'):
            op.execute(f'DROP TRIGGER IF EXISTS {trigger}')
