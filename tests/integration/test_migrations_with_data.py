"""Migrations on a live installation: books written through the API (users, wallets with money, transfers, trades in
every state, refunds, a dispute, ratings, withdrawals, alerts) survive going down to an older revision and back up
to head, row for row, and ``flask wallet check`` stays clean at head.

On SQLite a batch operation copies a table and drops the old one (0010 copies ``bank_cards``, 0016 ``trades``,
``disputes``, ``ratings`` and ``topups``); with foreign keys on, SQLite refused to drop a table other rows refer to,
so an installation with one top-up or one trade could not upgrade past 0009 or 0015 (``migrations/env.py``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, make_url, text

from app import create_app
from core.clock import FrozenClock
from core.db import db
from tests.api.test_escrow_stories import PP, act, open_trade, paid_and_shipped
from tests.conftest import Api, Inbox

# Tables whose rows every revision from 0006 on holds, with the columns every one of those revisions has.
_KEPT = {
    "users": "id, phone",
    "ledger_accounts": "id, kind, owner, currency, debits_posted, credits_posted, debits_pending, credits_pending",
    "transfers": "id, debit_account_id, credit_account_id, amount, currency, kind, hold_id",
    "ledger_entries": "id, account_id, transfer_id, amount, balance_after",
    "holds": "id, amount, status",
    "hold_resolutions": "hold_id, outcome, posted_amount, transfer_id",
    "trades": "id, status, amount, shipping_fee, paid_amount, refunded_amount, released_amount, fee_amount",
    "refunds": "id, trade_id, amount, status",
    "disputes": "id, trade_id, status, outcome, refund_amount",
    "ratings": "id, trade_id, rater_id, ratee_id, score",
    "topups": "id, amount, status, transfer_id",
    "withdrawals": "id, amount, status, hold_id",
    "daily_usage": "user_id, day, amount",
    "alerts": "id, event, status",
}


def _rows() -> dict[str, list[tuple]]:
    return {table: sorted(tuple(row) for row in db.session.execute(text(f"SELECT {columns} FROM {table}")))
            for table, columns in _KEPT.items()}


def _books(app, api: Api) -> None:
    """Two people who pay each other, and a trade in each state a live installation holds."""
    buyer = api.verified(real_name="李四", locale="en")
    assert api.money("/api/v1/topups", buyer, amount=500000, bank_card_id=buyer["card_id"]).status_code == 201
    seller = api.verified(real_name="王五", locale="en")
    assert api.money("/api/v1/transfers", buyer, amount=1999, to_phone=seller["phone"]).status_code == 201
    assert api.money("/api/v1/withdrawals", buyer, amount=1000, bank_card_id=buyer["card_id"]).status_code == 202
    open_trade(api, buyer, seller)  # WAIT_BUYER_PAY
    assert act(api, buyer, open_trade(api, buyer, seller), "cancel").status_code == 200  # TRADE_CLOSED
    paid = open_trade(api, buyer, seller)
    assert act(api, buyer, paid, "pay", key=f"pay-{paid}", **PP).status_code == 200  # WAIT_SELLER_SEND_GOODS
    paid_and_shipped(api, buyer, seller)  # WAIT_BUYER_CONFIRM_GOODS
    finished = paid_and_shipped(api, buyer, seller)
    assert act(api, buyer, finished, "confirm", key=f"confirm-{finished}", **PP).status_code == 200
    assert act(api, buyer, finished, "ratings", score=1, comment="great").status_code == 201
    assert act(api, seller, finished, "ratings", score=0).status_code == 201
    partly = paid_and_shipped(api, buyer, seller)  # a partial refund, then finished
    refund = act(api, buyer, partly, "refunds", amount=5000, reason="scratched").json
    assert act(api, seller, partly, f"refunds/{refund['id']}/agree", **PP).status_code == 200
    assert act(api, buyer, partly, "confirm", key=f"confirm-{partly}", **PP).status_code == 200
    asked = paid_and_shipped(api, buyer, seller)  # a refund open
    assert act(api, buyer, asked, "refunds", amount=20900, reason="too slow").status_code == 201
    disputed = paid_and_shipped(api, buyer, seller)  # refused, then escalated
    refund = act(api, buyer, disputed, "refunds", amount=20900, reason="not as described").json
    assert act(api, seller, disputed, f"refunds/{refund['id']}/refuse", reason="it was as described").status_code \
        == 200
    assert act(api, buyer, disputed, "disputes", reason="seller refuses").status_code == 201
    api.inbox.messages()  # the dispatcher sends what is due: alerts in more than one status


@pytest.fixture
def live(scratch_url, tmp_path: Path):
    """An installation at head with books in it (``Api`` drives it as the mobile clients did)."""
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test", "CLOCK": FrozenClock(),
                      "RATELIMIT_ENABLED": False, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    with app.app_context():
        upgrade()
    _books(app, Api(app.test_client(), Inbox(app)))  # each request in an application context of its own
    yield app
    with app.app_context():
        db.engine.dispose()


def _head() -> str:
    return ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config()).get_current_head()


def _ledger_clean(app) -> None:
    result = app.test_cli_runner().invoke(args=["wallet", "check"])
    assert result.exit_code == 0, result.output
    assert "ledger clean" in result.output


@pytest.mark.parametrize("revision", ["0015", "0014", "0010", "0006"])
def test_books_survive_going_down_to_an_older_revision_and_back_up(live, revision):
    with live.app_context():
        before = _rows()
        assert {row[1] for row in before["trades"]} == {
            "WAIT_BUYER_PAY", "TRADE_CLOSED", "WAIT_SELLER_SEND_GOODS", "WAIT_BUYER_CONFIRM_GOODS", "TRADE_FINISHED"}
        db.session.remove()
        downgrade(revision=revision)
        assert _rows() == before
        db.session.remove()
        upgrade()
        assert _rows() == before
        db.session.remove()
    _ledger_clean(live)


# --- an installation that stood at 0015, upgraded -------------------------------------------------------------------

NOW = "2026-01-15 08:00:00"
_USER = ("INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
         " created_at, updated_at) VALUES (:id, :phone, 'x', 'x', 'en', false, false, :now, :now)")
_TRADE = ("INSERT INTO trades (id, buyer_id, seller_id, title, amount, shipping_fee, currency, status, fee_bp,"
          " paid_amount, refunded_amount, released_amount, fee_amount, created_at, reminded, extended, timeline_seq,"
          " timeline_hash) VALUES ('trd_1', 'usr_b', 'usr_s', 't', 100, 0, 'CNY', 'WAIT_BUYER_CONFIRM_GOODS', 0,"
          " 100, 0, 0, 0, :now, false, false, 0, :genesis)")
_REFUND = ("INSERT INTO refunds (id, trade_id, amount, reason, return_goods, after_shipping, status, disputed,"
           " created_at) VALUES ('rfd_1', 'trd_1', 50, 'r', false, true, 'WAIT_SELLER_AGREE', false, :now)")


def test_an_installation_at_0015_with_a_refund_upgrades_to_head(scratch_url):
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0015")
        for user_id, phone in (("usr_b", "+12025550105"), ("usr_s", "+12025550106")):
            db.session.execute(text(_USER), {"id": user_id, "phone": phone, "now": NOW})
        db.session.execute(text(_TRADE), {"now": NOW, "genesis": "0" * 64})
        db.session.execute(text(_REFUND), {"now": NOW})
        db.session.commit()
        db.session.remove()
        upgrade()
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == _head()
        assert db.session.execute(text("SELECT id, trade_id, status FROM refunds")).all() == [
            ("rfd_1", "trd_1", "WAIT_SELLER_AGREE")]
        db.session.remove()
        db.engine.dispose()


def test_a_migration_that_leaves_a_dangling_reference_is_rolled_back(scratch_url):
    """SQLite runs the migrations with foreign keys off (a table copy could not drop the old table otherwise), so the
    references are checked before each migration commits: a row that refers to nothing stops it."""
    if not scratch_url.startswith("sqlite"):
        pytest.skip("PostgreSQL keeps its foreign keys on during migrations")
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0015")
        with sqlite3.connect(make_url(scratch_url).database) as orphans:  # foreign keys off, as sqlite3 opens it
            orphans.execute(_REFUND.replace(":now", f"'{NOW}'"))
        with pytest.raises(SystemExit):  # flask-migrate logs the migration's error and exits
            upgrade()
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0015"
        assert db.session.scalar(text("PRAGMA foreign_keys")) == 1  # the pool's connections have them on again
        db.session.remove()
        db.engine.dispose()


def test_every_migration_goes_down_one_step_at_a_time_with_books_in_it_and_all_come_back(live):
    with live.app_context():
        revisions = [r.revision for r in ScriptDirectory.from_config(current_app.extensions["migrate"].migrate
                                                                     .get_config()).walk_revisions()]
        for down_to in [*revisions[1:], "base"]:
            downgrade(revision=down_to)
            assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == (
                None if down_to == "base" else down_to)
            db.session.remove()
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        db.session.remove()
    _ledger_clean(live)


def test_an_installation_with_a_fee_of_under_one_percent_stops_at_0024_and_says_why(scratch_url):
    """Migration 0025 holds a seller's fee to 0 or a merchant's 1-1.5 % (R10). A rate it would refuse is left for
    someone to look at, never changed by the upgrade: the upgrade stops at 0024 with the rows untouched."""
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0024")
        db.session.execute(text(_USER), {"id": "usr_s", "phone": "+12025550106", "now": NOW})
        db.session.execute(text("INSERT INTO seller_settings (user_id, fee_bp) VALUES ('usr_s', 15)"))
        db.session.commit()
        db.session.remove()
        with pytest.raises(SystemExit):  # flask-migrate logs the migration's error and exits
            upgrade()
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0024"
        assert db.session.execute(text("SELECT user_id, fee_bp FROM seller_settings")).all() == [("usr_s", 15)]
        db.session.execute(text("UPDATE seller_settings SET fee_bp = 150"))
        db.session.commit()
        db.session.remove()
        upgrade()
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == _head()
        db.session.remove()
        db.engine.dispose()


def test_an_installation_with_an_entry_that_is_not_its_transfers_side_stops_at_0028_and_says_why(scratch_url, capfd):
    """Migration 0029 refuses new ledger entries that do not match their transfer. One already there (a debit written as
    a credit) is left for someone to look at: the upgrade stops at 0028, naming the rule, with the rows untouched."""
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade(revision="0028")
        for account in ("la_a", "la_b"):
            db.session.execute(text(
                "INSERT INTO ledger_accounts (id, kind, owner, currency, shard, debits_posted, credits_posted,"
                " debits_pending, credits_pending, created_at)"
                " VALUES (:id, 'system', :id, 'CNY', 0, 0, 0, 0, 0, :now)"),
                {"id": account, "now": NOW})
        db.session.execute(text(
            "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
            " VALUES ('tf_1', 'la_a', 'la_b', 100, 'CNY', 'payment', :now)"), {"now": NOW})
        db.session.execute(text("UPDATE ledger_accounts SET debits_posted = 100 WHERE id = 'la_a'"))
        db.session.execute(text("UPDATE ledger_accounts SET credits_posted = 100 WHERE id = 'la_b'"))
        db.session.execute(text(
            "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
            " created_at) VALUES ('la_a', 'tf_1', 'la_b', 'payment', 100, 100, :now),"
            " ('la_b', 'tf_1', 'la_a', 'payment', 100, 100, :now)"), {"now": NOW})
        db.session.commit()
        db.session.remove()
        with pytest.raises(SystemExit):  # flask-migrate logs the migration's error and exits
            upgrade()
        assert "migration 0029: 1 ledger entries not matching their transfer" in capfd.readouterr().err
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == "0028"
        db.session.remove()
        db.engine.dispose()
