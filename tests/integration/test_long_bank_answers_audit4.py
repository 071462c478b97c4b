"""A bank whose card tokens and references are longer than 64 characters. What the bank answers is opaque and its
length the bank's choice; the columns that keep it were ``VARCHAR(64)``, which SQLite never enforced and PostgreSQL
does: binding a card at such a bank was a 500, and a top-up the bank had debited (or a payout it had accepted) could
not be recorded, on any retry, so the money left the card and never reached the wallet. Since migration 0030 they are
text of any length. (The PostgreSQL run is the one that failed: ``WALLET_TEST_DATABASE_URL``.)"""

from __future__ import annotations

import dataclasses

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text

from app import create_app
from core.db import db
from tests.factories import PAYMENT_PASSWORD
from tests.factories_ids import make_card_number, make_id_number
from wallet.banks import BankResult, SimulatedBank
from wallet.card_models import BankCard
from wallet.check import check_invariants
from wallet.funds import process_withdrawals
from wallet.funds_models import TopUp, Withdrawal

LONG = 300  # characters in each token and reference the bank answers


class _LongAnswersBank:
    """The simulated bank behind an adapter whose tokens and references are ``LONG`` characters: a token is the
    simulated bank's with padding the adapter takes off again, a reference the simulated bank's, padded."""

    def __init__(self, bank: SimulatedBank) -> None:
        self.bank = bank

    @staticmethod
    def _padded(value: str) -> str:
        return value + "~" + "x" * (LONG - len(value) - 1)

    @staticmethod
    def _unpadded(value: str) -> str:
        return value.partition("~")[0]

    def link_card(self, bank_code: str, card_number: str, holder_name: str) -> str | None:
        token = self.bank.link_card(bank_code, card_number, holder_name)
        return None if token is None else self._padded(token)

    def _long(self, result: BankResult) -> BankResult:
        return dataclasses.replace(result, bank_reference=self._padded(result.bank_reference))

    def debit(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        return self._long(self.bank.debit(bank_code, self._unpadded(card_token), amount, reference))

    def payout(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        return self._long(self.bank.payout(bank_code, self._unpadded(card_token), amount, reference))

    def poll_payout(self, reference: str):
        return self.bank.poll_payout(reference)


def _rows(app, model) -> list:
    with app.app_context():
        rows = list(db.session.scalars(select(model)))
        db.session.expunge_all()
        db.session.commit()
        return rows


def test_a_card_binds_tops_up_and_withdraws_at_a_bank_with_long_tokens_and_references(api, app):
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _LongAnswersBank(bank)
    alice = api.register()
    identity = api.client.post("/api/v1/me/identity", headers=alice["headers"],
                               json={"real_name": "张三", "id_number": make_id_number()})
    assert identity.status_code in (200, 201), identity.json
    bound = api.client.post("/api/v1/me/bank-cards", headers=alice["headers"], json={
        "card_number": make_card_number(), "holder_name": "张三", "bank_code": "ICBC",
        "payment_password": PAYMENT_PASSWORD})
    assert bound.status_code == 201, bound.json
    [card] = _rows(app, BankCard)
    assert len(card.bank_token) == LONG

    topup = api.money("/api/v1/topups", alice, amount=5000, bank_card_id=bound.json["id"])
    assert (topup.status_code, topup.json["status"]) == (201, "succeeded"), topup.json
    assert api.balance(alice) == 5000
    assert [len(row.bank_reference) for row in _rows(app, TopUp)] == [LONG]

    withdrawal = api.money("/api/v1/withdrawals", alice, amount=2000, bank_card_id=bound.json["id"])
    assert withdrawal.status_code == 202, withdrawal.json
    with app.app_context():
        process_withdrawals()
        process_withdrawals()
    [paid] = _rows(app, Withdrawal)
    assert (paid.status, len(paid.bank_reference)) == ("succeeded", LONG)
    assert api.balance(alice) == 3000
    assert bank.total_debited(card.bank_token.partition("~")[0]) == 5000
    with app.app_context():
        assert check_invariants() == []


# --- the migration ---------------------------------------------------------------------------------------------------

NOW = "2026-01-15 08:00:00"


def test_going_down_past_0030_refuses_while_a_token_is_longer_than_64_and_goes_once_none_is(scratch_url, tmp_path):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test", "SMS_CONSOLE_FILE": str(tmp_path / "s.jsonl")})
    with app.app_context():
        upgrade(revision="0030")
        db.session.execute(text(
            "INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
            " created_at, updated_at) VALUES ('usr_a', '+12025550107', 'x', 'x', 'en', false, false, :now, :now)"),
            {"now": NOW})
        db.session.execute(text(
            "INSERT INTO bank_cards (id, user_id, bank_code, card_hash, last4, holder_name, bank_token, created_at)"
            " VALUES ('card_a', 'usr_a', 'ICBC', 'h', '1234', '张三', :token, :now)"), {"token": "t" * 65, "now": NOW})
        db.session.commit()
        db.session.remove()
        with pytest.raises(SystemExit):  # flask-migrate logs the migration's error and exits
            downgrade(revision="0029")
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0030"
        assert db.session.scalar(text("SELECT bank_token FROM bank_cards")) == "t" * 65
        db.session.execute(text("UPDATE bank_cards SET bank_token = :token"), {"token": "t" * 64})
        db.session.commit()
        db.session.remove()
        downgrade(revision="0029")
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0029"
        assert db.session.scalar(text("SELECT bank_token FROM bank_cards")) == "t" * 64
        db.session.remove()
        upgrade()
        db.session.remove()
        db.engine.dispose()
