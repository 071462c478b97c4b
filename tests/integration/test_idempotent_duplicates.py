"""Every endpoint that takes an Idempotency-Key, sent twice with the same key and body while the first is still inside
its transaction (its money moved, its alert queued, nothing committed): the second waits on the key, then gets the
first's answer replayed. One effect, one alert, clean books. And a request that dies after its ledger write, or whose
COMMIT is lost on the way back, leaves its key so that the client's retry does the right thing: runs it (nothing was
kept) or replays it (it committed); one whose connection dies inside its transaction runs again on a fresh one, once.

The overlap tests need PostgreSQL (SQLite runs one writer at a time, so a paused writer would hold up the whole
database); the tests of requests that die run on both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from core import db as core_db
from core import idempotency
from core.db import db
from notifications import dispatcher
from notifications.models import Alert
from tests.api.escrow_helpers import PP, books_clean, grant_staff, open_trade, paid_and_shipped
from tests.integration.test_lost_connections import drop_the_pools_connections
from tests.integration.test_money_races_audit import bank, card_token, first_pauses_inside
from wallet import funds, ledger, trades
from wallet.escrow_models import Trade
from wallet.funds_models import TopUp, Withdrawal
from wallet.models import Transfer


def send(app, who, path, key, **body) -> tuple[int, Any, bool]:
    response = app.test_client().post(path, headers={**who["headers"], "Idempotency-Key": key}, json=body)
    return response.status_code, response.get_json(), response.headers.get("Idempotent-Replayed") == "true"


def count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def alerts(app, event) -> int:
    with app.app_context():
        dispatcher.expand()  # as a dispatcher does before sending: the changes' events become alerts
    return count(app, Alert, Alert.event == event)


def transfers(app, kind) -> int:
    return count(app, Transfer, Transfer.kind == kind)


@pytest.fixture
def parties(api):
    buyer = api.verified(real_name="李四", locale="en")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    return buyer, api.verified(real_name="王五", locale="en")


# --- the same request twice at once, one per endpoint -----------------------------------------------------------


def _transfer(api, app, parties):
    buyer, _seller = parties
    bob = api.register()
    return buyer, "/api/v1/transfers", {"amount": 100, "to_phone": bob["phone"], **PP}


def _withdrawal(api, app, parties):
    buyer, _seller = parties
    return buyer, "/api/v1/withdrawals", {"amount": 100, "bank_card_id": buyer["card_id"], **PP}


def _topup(api, app, parties):
    buyer, _seller = parties
    return buyer, "/api/v1/topups", {"amount": 100, "bank_card_id": buyer["card_id"], **PP}


def _pay(api, app, parties):
    buyer, seller = parties
    return buyer, f"/api/v1/trades/{open_trade(api, buyer, seller)}/pay", PP


def _pay_with_card(api, app, parties):
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    trade_id = open_trade(api, buyer, seller)
    return buyer, f"/api/v1/trades/{trade_id}/pay", {"bank_card_id": buyer["card_id"], **PP}


def _confirm(api, app, parties):
    buyer, seller = parties
    return buyer, f"/api/v1/trades/{paid_and_shipped(api, buyer, seller)}/confirm", PP


def _open_trade(api, app, parties):
    buyer, seller = parties
    return buyer, "/api/v1/trades", {"seller_phone": seller["phone"], "title": "lamp", "amount": 100}


def _refund_step(returned: bool) -> Callable[..., tuple[Any, str, dict[str, Any]]]:
    def arrange(api, app, parties):
        buyer, seller = parties
        trade_id = paid_and_shipped(api, buyer, seller)
        status, refund, _ = send(app, buyer, f"/api/v1/trades/{trade_id}/refunds", "ask", amount=5000,
                                 reason="broken", return_goods=returned)
        assert status == 201, refund
        base = f"/api/v1/trades/{trade_id}/refunds/{refund['id']}"
        if not returned:
            return seller, f"{base}/agree", PP
        assert send(app, seller, f"{base}/agree", "agree", **PP)[0] == 200
        shipped_back = send(app, buyer, f"{base}/return", "back", carrier="SF Express", tracking_number="SF0000000001")
        assert shipped_back[0] == 200, shipped_back
        return seller, f"{base}/receive-return", PP

    return arrange


def _decide(api, app, parties):
    buyer, seller = parties
    trade_id = paid_and_shipped(api, buyer, seller)
    status, refund, _ = send(app, buyer, f"/api/v1/trades/{trade_id}/refunds", "ask", amount=5000, reason="broken")
    assert status == 201, refund
    refused = send(app, seller, f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/refuse", "no", reason="fine")
    assert refused[0] == 200, refused
    status, dispute, _ = send(app, buyer, f"/api/v1/trades/{trade_id}/disputes", "escalate", reason="refused")
    assert status == 201, dispute
    return grant_staff(api, app), f"/api/v1/admin/disputes/{dispute['id']}/decide", {
        "outcome": "split", "refund_amount": 4000, "reason": "partly broken"}


def _one(kind: str) -> Callable[[Any], int]:
    return lambda app: transfers(app, kind)


def _withdrawals(app) -> int:
    return count(app, Withdrawal)


# (arrange, where the first request pauses, pause after that call returns, its effect counted, its alert and how many
# parties it tells)
ENDPOINTS = {
    "transfer": (_transfer, (funds, "enqueue"), False, _one("payment"), ("balance_payment", 1)),
    "withdrawal": (_withdrawal, (funds, "enqueue"), False, _withdrawals, ("withdrawal_requested", 1)),
    "topup-record": (_topup, (funds, "create_topup"), True, _one("topup"), ("topup_credited", 1)),
    "topup-bank": (_topup, (funds, "enqueue"), False, _one("topup"), ("topup_credited", 1)),
    "pay": (_pay, (trades, "enqueue"), False, _one("escrow_pay"), ("trade_paid_ship_now", 1)),
    "pay-with-card-top-up": (_pay_with_card, (funds, "enqueue"), False, _one("escrow_pay"), ("topup_credited", 1)),
    "pay-with-card-payment": (_pay_with_card, (trades, "enqueue"), False, _one("escrow_pay"),
                              ("trade_paid_ship_now", 1)),
    "confirm": (_confirm, (trades, "enqueue"), False, _one("escrow_release"), ("trade_finished", 2)),
    "open-trade": (_open_trade, (trades, "open_trade"), True, lambda app: count(app, Trade), None),
    "refund-agree": (_refund_step(False), (trades, "enqueue"), False, _one("refund"), ("refund_completed", 1)),
    "refund-receive-return": (_refund_step(True), (trades, "enqueue"), False, _one("refund"), ("refund_completed", 1)),
    "dispute-decision": (_decide, (trades, "enqueue"), False, _one("refund"), ("dispute_decided", 2)),
}


@pytest.mark.postgres
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_duplicate_sent_while_the_first_is_inside_its_transaction_waits_and_gets_its_answer(
        api, app, monkeypatch, parties, endpoint):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL): SQLite runs one writer at a time anyway")
    arrange, (target, name), after, effects, told = ENDPOINTS[endpoint]
    who, path, body = arrange(api, app, parties)
    event, parties_told = told or (None, 0)
    effects_before, alerts_before = effects(app), alerts(app, event) if event else 0
    request = lambda: send(app, who, path, "the-key", **body)  # noqa: E731
    first, second, waited = first_pauses_inside(monkeypatch, target, name, request, request, after=after)
    assert waited  # the duplicate queued behind the first's key (or the row it was working on)
    if endpoint == "pay-with-card-top-up":
        # The pause is in the card top-up, which runs before either request claims the key: once it commits, both go
        # on to claim it, and either may come first (CI saw the duplicate win once). One runs, the other replays.
        first, second = sorted((first, second), key=lambda result: result[2])
    assert first[0] in (200, 201, 202) and not first[2], first
    assert (second[0], second[1], second[2]) == (first[0], first[1], True), second
    assert effects(app) == effects_before + 1
    if event:
        assert alerts(app, event) - alerts_before == parties_told  # one per party told, not one per request
    books_clean(app)


def test_a_card_paid_duplicate_charges_the_card_once(api, app, monkeypatch):
    """Same as above on either database, without the forced overlap: the card is charged once."""
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    path = f"/api/v1/trades/{open_trade(api, buyer, seller)}/pay"
    first = send(app, buyer, path, "the-key", bank_card_id=buyer["card_id"], **PP)
    again = send(app, buyer, path, "the-key", bank_card_id=buyer["card_id"], **PP)
    assert (first[0], again[0], again[2]) == (200, 200, True)
    assert bank(app).total_debited(card_token(app, buyer)) == 20900
    assert count(app, TopUp) == 1
    books_clean(app)


# --- a request that dies midway ---------------------------------------------------------------------------------


class Crash(RuntimeError):
    """The process failing between two steps of a request (a bug, an out-of-memory kill seen from inside)."""


def fails_once(monkeypatch, target: Any, name: str, *, after: bool = False) -> list[int]:
    """Make the first call of ``target.name`` raise ``Crash`` (with ``after``: once it has done its work)."""
    original, calls = getattr(target, name), []

    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1 and not after:
            raise Crash(name)
        result = original(*args, **kwargs)
        if len(calls) == 1:
            raise Crash(name)
        return result

    monkeypatch.setattr(target, name, call)
    return calls


def test_a_payment_that_dies_after_its_ledger_write_keeps_nothing_and_its_retry_runs_once(
        api, app, monkeypatch, parties):
    buyer, _seller = parties
    bob = api.register()
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer 500 as in production, not raise into the test
    fails_once(monkeypatch, idempotency, "execute_carrying")  # the statement that stores the answer
    died = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert (died[0], died[1]["code"]) == (500, "internal_error")
    assert (api.balance(bob), transfers(app, "payment"), alerts(app, "balance_payment")) == (0, 0, 0)
    retried = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert (retried[0], retried[2]) == (201, False)
    again = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert (again[0], again[1], again[2]) == (201, retried[1], True)
    assert (api.balance(bob), transfers(app, "payment"), alerts(app, "balance_payment")) == (100, 1, 1)
    books_clean(app)


def test_a_payment_whose_commit_answer_is_lost_is_a_503_and_its_retry_replays_it(api, app, monkeypatch, parties):
    buyer, _seller = parties
    bob = api.register()
    original, lost = core_db._commit, []

    def commit_then_lose_the_connection(state):
        original(state)
        if not lost:  # the server committed; the answer to COMMIT never arrives
            lost.append(1)
            error = OperationalError("COMMIT", {}, ConnectionResetError("server closed the connection"))
            error.during_commit = True
            raise error

    monkeypatch.setattr(core_db, "_commit", commit_then_lose_the_connection)
    unknown = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert (unknown[0], unknown[1]["code"]) == (503, "database_unavailable")
    retried = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert (retried[0], retried[2]) == (201, True)
    assert (api.balance(bob), transfers(app, "payment"), alerts(app, "balance_payment")) == (100, 1, 1)
    books_clean(app)


@pytest.mark.postgres
def test_a_payment_whose_connection_is_dropped_inside_its_transaction_runs_once_on_a_fresh_one(
        api, app, monkeypatch, parties):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL): it terminates the server's backends")
    buyer, _seller = parties
    bob = api.register()
    original, dropped = funds.enqueue, []

    def restart_the_database_here(*args: Any, **kwargs: Any) -> Any:
        if not dropped:  # the key is claimed and the money moved, on a connection about to die
            dropped.append(drop_the_pools_connections(app))
        return original(*args, **kwargs)

    monkeypatch.setattr(funds, "enqueue", restart_the_database_here)
    paid = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert dropped and dropped[0] >= 1
    assert (paid[0], paid[2]) == (201, False), paid
    again = send(app, buyer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], **PP)
    assert (again[0], again[1], again[2]) == (201, paid[1], True)
    assert (api.balance(bob), transfers(app, "payment"), alerts(app, "balance_payment")) == (100, 1, 1)
    books_clean(app)


def test_a_top_up_that_dies_after_the_bank_debited_the_card_is_credited_once_by_its_retry(api, app, monkeypatch):
    alice = api.verified()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    fails_once(monkeypatch, ledger, "transfer")  # the bank said yes; the wallet's credit never commits
    died = send(app, alice, "/api/v1/topups", "top", amount=2500, bank_card_id=alice["card_id"], **PP)
    assert died[0] == 500
    assert (api.balance(alice), count(app, TopUp, TopUp.status == "pending")) == (0, 1)
    retried = send(app, alice, "/api/v1/topups", "top", amount=2500, bank_card_id=alice["card_id"], **PP)
    assert (retried[0], retried[1]["status"], retried[2]) == (201, "succeeded", True)
    assert api.balance(alice) == 2500
    assert bank(app).total_debited(card_token(app, alice)) == 2500
    assert (transfers(app, "topup"), alerts(app, "topup_credited")) == (1, 1)
    books_clean(app)
