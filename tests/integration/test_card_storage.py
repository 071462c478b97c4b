"""What the database keeps of a bank card, and what it refuses: an active card always has the bank's token (never
the number), a known bank and four last digits. Migration 0010 turns the numbers of cards bound before it into
sandbox-bank tokens and drops the number column; its downgrade leaves no active card without a number."""

from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app import create_app
from core.db import db
from tests.factories_ids import make_card_number

_USER = ("INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled, "
         "created_at, updated_at) VALUES ('usr_1', '+12025550101', 'x', 'x', 'en', false, false, :now, :now)")
_CARD = ("INSERT INTO bank_cards (id, user_id, bank_code, card_hash, last4, holder_name, created_at, removed_at, "
         "{column}) "
         "VALUES (:id, 'usr_1', :bank, :hash, :last4, '张三', :now, :removed, :value)")
NOW = "2026-01-15 08:00:00"


def insert_card(column: str, *, id: str, value: str | None, bank: str = "ICBC", last4: str = "1234",
                removed: str | None = None) -> None:
    db.session.execute(text(_CARD.format(column=column)), {"id": id, "bank": bank, "hash": id + "-hash",
                                                            "last4": last4, "now": NOW, "removed": removed,
                                                            "value": value})
    db.session.commit()


@pytest.mark.parametrize(
    ("card", "why"),
    [
        ({"value": None}, "an active card without a token"),
        ({"value": "sim-ICBC-token", "bank": "HSBC"}, "an unknown bank"),
        ({"value": "sim-ICBC-token", "last4": "123"}, "three last digits"),
    ],
    ids=["no token", "bank", "last4"],
)
def test_the_database_refuses_a_bad_card_row(app, card, why):
    with app.app_context():
        db.session.execute(text(_USER), {"now": NOW})
        db.session.commit()
        with pytest.raises(IntegrityError):
            insert_card("bank_token", id="card_bad", **card)
        db.session.rollback()
        insert_card("bank_token", id="card_removed", value=None, removed=NOW)  # a removed card has no token
        assert db.session.execute(text("SELECT count(*) FROM bank_cards")).scalar() == 1, why


def test_migration_0010_replaces_stored_numbers_with_tokens_and_back(scratch_url):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    active, other = make_card_number(ending="4321"), make_card_number()
    with app.app_context():
        upgrade(revision="0009")
        db.session.execute(text(_USER), {"now": NOW})
        insert_card("card_number", id="card_active", value=active, bank="CMB", last4="4321")
        insert_card("card_number", id="card_removed", value=None, last4=other[-4:], removed=NOW)

        upgrade(revision="0010")
        columns = {column["name"] for column in inspect(db.engine).get_columns("bank_cards")}
        rows = {row.id: row for row in db.session.execute(text("SELECT * FROM bank_cards"))}
        assert "card_number" not in columns
        assert rows["card_active"].bank_token.startswith("sim-CMB-") and rows["card_active"].bank_token.endswith("4321")
        assert active[:-4] not in rows["card_active"].bank_token
        assert rows["card_removed"].bank_token is None
        with pytest.raises(IntegrityError):  # the new rule holds after the upgrade
            insert_card("bank_token", id="card_bad", value=None)
        db.session.rollback()

        downgrade(revision="0009")
        rows = {row.id: row for row in db.session.execute(text("SELECT * FROM bank_cards"))}
        assert all(row.card_number is None and row.removed_at is not None for row in rows.values())
        with pytest.raises(IntegrityError):  # and the old one after the downgrade
            insert_card("card_number", id="card_bad", value=None)
        db.session.rollback()
        db.engine.dispose()
