"""ratings: a rating is given by one party of its trade to the other, under the ratee's role

The database took a rating by someone outside the trade, of someone outside it, or under the wrong role (the buyer
rating the seller as a "buyer"), and counted it in the ratee's totals; only the code kept them out (found by an audit
that wrote such rows with plain SQL). A trigger now refuses them on both databases. That the trade is finished, and
the rating within its window, stays the code's to check (and ``flask wallet check`` reports a rating of a trade that
is not finished): a trade a deadline finishes in the rating's own transaction is saved after the rating is written.

Rows that break the rule stop the upgrade with a message naming how many, as in 0016.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 08:15:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None


def _between_parties_broken(row: str) -> str:
    return (f"NOT EXISTS (SELECT 1 FROM trades t WHERE t.id = {row}.trade_id"
            f" AND (({row}.rater_id = t.buyer_id AND {row}.ratee_id = t.seller_id AND {row}.role = 'seller')"
            f" OR ({row}.rater_id = t.seller_id AND {row}.ratee_id = t.buyer_id AND {row}.role = 'buyer')))")


_MESSAGE = "a rating is given by one party of its trade to the other, under the ratee''s role"
_BROKEN = 'SELECT COUNT(*) FROM ratings x WHERE ' + _between_parties_broken('x')

PG_FUNCTION = f"""
CREATE FUNCTION rating_between_the_trades_parties() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_between_parties_broken('NEW')} THEN
        RAISE EXCEPTION 'rating %: {_MESSAGE}', NEW.id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$"""
PG_TRIGGER = ("CREATE TRIGGER ratings_between_the_trades_parties BEFORE INSERT OR UPDATE OF trade_id, rater_id,"
              " ratee_id, role ON ratings FOR EACH ROW EXECUTE FUNCTION rating_between_the_trades_parties()")
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER ratings_between_the_trades_parties_{when} BEFORE {event} ON ratings"
    f" WHEN {_between_parties_broken('NEW')} BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
    for when, event in (('insert', 'INSERT'), ('update', 'UPDATE OF trade_id, rater_id, ratee_id, role'))
]


def upgrade():
    count = op.get_bind().execute(sa.text(_BROKEN)).scalar()
    if count:
        raise RuntimeError(f'migration 0028: {count} ratings not given by one party of their trade to the other under'
                           ' the ratee\'s role; look at them and correct them before upgrading')
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
        op.execute('DROP TRIGGER IF EXISTS ratings_between_the_trades_parties ON ratings')
        op.execute('DROP FUNCTION IF EXISTS rating_between_the_trades_parties()')
    elif dialect == 'sqlite':
        for when in ('insert', 'update'):
            op.execute(f'DROP TRIGGER IF EXISTS ratings_between_the_trades_parties_{when}')
