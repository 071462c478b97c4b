"""A bank adapter that misbehaves (an audit of every path that calls the bank): it raises something other than
``BankUnavailable`` (a bug in the adapter, a dropped connection, a timeout of its HTTP client), before or after the
bank acted. Every endpoint that asks the bank answers 503 ``bank_unavailable`` with ``Retry-After``, and the books,
holds, daily limits and alerts are as if the request had not been made (or, where the bank may have acted, the
top-up or withdrawal stays pending and is finished by a retry); the workers log one line and try again later."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import func, select

from core.db import db
from notifications import dispatcher
from notifications.models import Alert
from tests.api.escrow_helpers import PP
from tests.factories import PAYMENT_PASSWORD
from tests.factories_ids import make_card_number, make_id_number
from wallet.banks import SimulatedBank
from wallet.card_models import BankCard
from wallet.check import check_invariants
from wallet.funds import process_withdrawals, retry_pending_topups
from wallet.funds_models import DailyUsage, TopUp, Withdrawal
from wallet.models import Hold

# What an adapter may raise that it did not foresee: a bug, a connection dropped, its HTTP client's timeout.
ERRORS = [RuntimeError("adapter bug"), ConnectionResetError(104, "Connection reset by peer"),
          TimeoutError("read timed out")]


class _RaisingBank:
    """The simulated bank, except that the methods in ``failing`` raise ``error``: before the bank acted, or after
    (``after=True``: the bank did it, and the adapter raised on the way back)."""

    def __init__(self, bank: SimulatedBank, error: BaseException, *failing: str, after: bool = False) -> None:
        self.bank, self.error, self.failing, self.after = bank, error, set(failing), after
        self.calls = 0

    def __getattr__(self, name):
        attribute = getattr(self.bank, name)
        if name not in self.failing:
            return attribute

        def failing(*args, **kwargs):
            self.calls += 1
            if self.after:
                attribute(*args, **kwargs)
            raise self.error

        return failing


def _alerts(app, event: str) -> int:
    with app.app_context():
        dispatcher.expand()  # as a dispatcher does before sending: the transactions' events become alerts
        count = db.session.scalar(select(func.count()).select_from(Alert).where(Alert.event == event))
        db.session.commit()
        return count


def _rows(app, model) -> list:
    with app.app_context():
        rows = list(db.session.scalars(select(model)))
        db.session.expunge_all()
        db.session.commit()
        return rows


def _unavailable(response) -> None:
    assert (response.status_code, response.get_json()["code"]) == (503, "bank_unavailable"), response.get_json()
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_binding_a_card_while_the_adapter_raises_is_a_503_that_binds_nothing(api, app, error):
    alice = api.register()
    identity = api.client.post("/api/v1/me/identity", headers=alice["headers"],
                               json={"real_name": "张三", "id_number": make_id_number()})
    assert identity.status_code in (200, 201)
    bank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _RaisingBank(bank, error, "link_card")
    body = {"card_number": make_card_number(), "holder_name": "张三", "bank_code": "ICBC",
            "payment_password": PAYMENT_PASSWORD}
    _unavailable(api.client.post("/api/v1/me/bank-cards", headers=alice["headers"], json=body))
    assert _rows(app, BankCard) == [] and _alerts(app, "card_bound") == 0

    app.extensions["bank_gateway"] = bank
    assert api.client.post("/api/v1/me/bank-cards", headers=alice["headers"], json=body).status_code == 201
    assert _alerts(app, "card_bound") == 1


@pytest.mark.parametrize("after", [False, True], ids=["before-the-debit", "after-the-debit"])
@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_a_top_up_whose_adapter_raises_is_a_503_and_a_retry_with_the_key_credits_it_once(api, app, error, after):
    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _RaisingBank(bank, error, "debit", after=after)
    _unavailable(api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"]))
    assert api.balance(alice) == 0 and _alerts(app, "topup_credited") == 0
    assert [t.status for t in _rows(app, TopUp)] == ["pending"]  # the bank may have acted: kept to be finished
    with app.app_context():
        assert check_invariants() == []

    app.extensions["bank_gateway"] = bank
    again = api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"])
    assert (again.status_code, again.json["status"]) == (201, "succeeded"), again.json
    assert api.balance(alice) == 1500 and _alerts(app, "topup_credited") == 1
    token = _rows(app, BankCard)[0].bank_token
    assert bank.total_debited(token) == 1500
    with app.app_context():
        assert check_invariants() == []


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_paying_a_trade_with_a_card_whose_adapter_raises_is_a_503_that_pays_nothing(api, app, error):
    from tests.api.test_escrow_stories import open_trade

    buyer, seller = api.verified(), api.verified()
    trade_id = open_trade(api, buyer, seller, amount=3000, shipping_fee=0)
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _RaisingBank(bank, error, "debit", after=True)
    _unavailable(api.money(f"/api/v1/trades/{trade_id}/pay", buyer, key="pay", bank_card_id=buyer["card_id"]))
    trade = api.client.get(f"/api/v1/trades/{trade_id}", headers=buyer["headers"]).json
    assert trade["status"] == "WAIT_BUYER_PAY" and api.balance(buyer) == 0
    assert _rows(app, DailyUsage) == []  # the limit is not spent on a payment that did not happen
    assert _alerts(app, "topup_credited") == 0
    with app.app_context():
        assert check_invariants() == []

    app.extensions["bank_gateway"] = bank
    paid = api.money(f"/api/v1/trades/{trade_id}/pay", buyer, key="pay", bank_card_id=buyer["card_id"])
    assert (paid.status_code, paid.json["status"]) == (200, "WAIT_SELLER_SEND_GOODS"), paid.json
    assert bank.total_debited(_rows(app, BankCard)[0].bank_token) == 3000
    assert [(t.amount, t.status) for t in _rows(app, TopUp)] == [(3000, "succeeded")]
    with app.app_context():
        assert check_invariants() == []


def _one_line(caplog, name: str) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name.startswith("wallet") and r.levelno >= logging.WARNING]
    assert len(records) == 1, [r.getMessage() for r in records]
    record = records[0]
    assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()
    assert name in record.getMessage()
    return record


@pytest.mark.parametrize("after", [False, True], ids=["before-the-debit", "after-the-debit"])
@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_the_top_up_worker_logs_one_line_for_an_adapter_that_raises_and_finishes_the_top_up_later(
        api, app, clock, caplog, error, after):
    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = raising = _RaisingBank(bank, error, "debit", after=after)
    _unavailable(api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"]))
    caplog.clear()
    with caplog.at_level(logging.WARNING), app.app_context():
        clock.advance(minutes=2)
        assert retry_pending_topups() == 0
    [topup] = _rows(app, TopUp)
    assert type(error).__name__ in _one_line(caplog, topup.id).getMessage()
    assert raising.calls == 2
    with app.app_context():
        retry_pending_topups()  # put off: not asked again at once
    assert raising.calls == 2

    app.extensions["bank_gateway"] = bank
    with app.app_context():
        clock.advance(minutes=10)
        assert retry_pending_topups() == 1
    assert api.balance(api.relogin(alice)) == 1500 and _alerts(app, "topup_credited") == 1
    with app.app_context():
        assert check_invariants() == []


@pytest.mark.parametrize("failing", ["payout", "poll_payout"])
@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_the_withdrawal_worker_logs_one_line_for_an_adapter_that_raises_and_pays_out_once_later(
        api, app, clock, caplog, error, failing):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"])
    assert withdrawal.status_code == 202
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _RaisingBank(bank, error, failing, after=True)
    with caplog.at_level(logging.WARNING), app.app_context():
        clock.advance(seconds=10)
        assert process_withdrawals() == 1
    _one_line(caplog, withdrawal.json["id"])
    [row] = _rows(app, Withdrawal)
    [hold] = [h for h in _rows(app, Hold) if h.id == row.hold_id]
    assert (row.status in ("pending", "submitted"), hold.status) == (True, "pending")
    assert type(error).__name__ in row.last_error
    assert [u.amount for u in _rows(app, DailyUsage)] == [1000]
    assert api.balance(api.relogin(alice)) == 4000 and _alerts(app, "withdrawal_failed") == 0

    app.extensions["bank_gateway"] = bank
    with app.app_context():
        for _ in range(3):
            clock.advance(minutes=10)
            process_withdrawals()
    assert [w.status for w in _rows(app, Withdrawal)] == ["succeeded"]
    assert bank.total_paid_out(_rows(app, BankCard)[0].bank_token) == 1000
    assert api.balance(api.relogin(alice)) == 4000 and _alerts(app, "withdrawal_completed") == 1
    with app.app_context():
        assert check_invariants() == []



# --- answers that cannot be trusted -------------------------------------------------------------------------------


class _BankThatMixesUpAnswers:
    """The simulated bank, except that its debit answers are rewritten by ``answer(asked_reference, result)``: a bank
    (or a connection pool in front of it) that hands back another request's answer, or misstates the amount or the
    currency. The debit itself happens as asked."""

    def __init__(self, bank: SimulatedBank, answer) -> None:
        self.bank, self.answer = bank, answer

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def debit(self, bank_code, card_token, amount, reference):
        return self.answer(reference, self.bank.debit(bank_code, card_token, amount, reference))


def test_a_debit_answer_about_another_top_up_credits_nothing(api, app, caplog):
    """Before the fix the wallet was credited on the answer whatever it was about: the second top-up's request never
    reached the bank, a stale connection handed back the first top-up's answer ("succeeded"), and 20.00 were
    credited that no card paid."""
    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    first = api.money("/api/v1/topups", alice, amount=1500, bank_card_id=alice["card_id"])
    assert first.status_code == 201
    token = _rows(app, BankCard)[0].bank_token
    first_answer = bank.debit("ICBC", token, 1500, reference=first.json["id"])  # the bank's word on the first

    class _StaleConnection(_BankThatMixesUpAnswers):
        def debit(self, bank_code, card_token, amount, reference):
            return first_answer

    app.extensions["bank_gateway"] = _StaleConnection(bank, None)
    with caplog.at_level(logging.ERROR):
        _unavailable(api.money("/api/v1/topups", alice, key="second", amount=2000, bank_card_id=alice["card_id"]))
    assert bank.total_debited(token) == 1500
    assert api.balance(alice) == 1500, "credited for a debit the bank never made"
    second = next(t for t in _rows(app, TopUp) if t.amount == 2000)
    assert second.status == "pending" and second.id in caplog.text and "another reference" in caplog.text
    with app.app_context():
        assert check_invariants() == []


@pytest.mark.parametrize("field, value", [("amount", 100), ("currency", "USD")])
def test_a_debit_answer_that_names_another_amount_or_currency_credits_nothing(api, app, field, value):
    """Before the fix 15.00 were credited on an answer saying the bank took 1.00 (or 15.00 US dollars)."""
    from dataclasses import replace

    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _BankThatMixesUpAnswers(
        bank, lambda reference, result: replace(result, **{field: value}))
    _unavailable(api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"]))
    assert api.balance(alice) == 0 and _alerts(app, "topup_credited") == 0
    assert [t.status for t in _rows(app, TopUp)] == ["pending"]

    app.extensions["bank_gateway"] = bank  # the bank's answer is right again: the top-up is finished once
    again = api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"])
    assert (again.status_code, again.json["status"]) == (201, "succeeded")
    assert api.balance(alice) == 1500 and bank.total_debited(_rows(app, BankCard)[0].bank_token) == 1500


def test_a_debit_answer_that_is_not_a_result_is_a_503_not_a_500(api, app):
    alice = api.verified()
    app.extensions["bank_gateway"] = _BankThatMixesUpAnswers(app.extensions["bank_gateway"], lambda *_: None)
    _unavailable(api.money("/api/v1/topups", alice, amount=1500, bank_card_id=alice["card_id"]))
    assert api.balance(alice) == 0


def test_a_payout_answer_for_less_than_asked_does_not_post_the_whole_withdrawal(api, app, clock):
    """Before the fix the worker took the bank's acceptance of a payout of 1.00 for the 10.00 asked, and posted the
    whole 10.00 when the bank said it had paid: 9.00 left the wallet that no card received."""
    from dataclasses import replace

    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=5000, bank_card_id=alice["card_id"]).status_code == 201
    assert api.money("/api/v1/withdrawals", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 202
    bank: SimulatedBank = app.extensions["bank_gateway"]

    class _ShortPayingBank(_BankThatMixesUpAnswers):
        def payout(self, bank_code, card_token, amount, reference):
            return replace(self.bank.payout(bank_code, card_token, 100, reference), amount=100)

    app.extensions["bank_gateway"] = _ShortPayingBank(bank, None)
    with app.app_context():
        for _ in range(3):
            clock.advance(minutes=10)
            process_withdrawals()
    [row] = _rows(app, Withdrawal)
    assert row.status == "pending" and "another amount" in row.last_error
    assert api.balance(api.relogin(alice)) == 4000  # still held, not paid out as 10.00
    assert [h.status for h in _rows(app, Hold)] == ["pending"]
    with app.app_context():
        assert check_invariants() == []


def test_a_card_token_that_is_not_a_token_binds_nothing(api, app):
    """Before the fix a card was bound with the empty token an adapter answered, and every top-up from it failed."""
    alice = api.register()
    assert api.client.post("/api/v1/me/identity", headers=alice["headers"],
                           json={"real_name": "张三", "id_number": make_id_number()}).status_code in (200, 201)

    class _EmptyTokenBank(_BankThatMixesUpAnswers):
        def link_card(self, bank_code, card_number, holder_name):
            return ""

    app.extensions["bank_gateway"] = _EmptyTokenBank(app.extensions["bank_gateway"], None)
    _unavailable(api.client.post("/api/v1/me/bank-cards", headers=alice["headers"], json={
        "card_number": make_card_number(), "holder_name": "张三", "bank_code": "ICBC",
        "payment_password": PAYMENT_PASSWORD}))
    assert _rows(app, BankCard) == []


# --- concurrency (PostgreSQL) -------------------------------------------------------------------------------------


def test_a_top_up_left_pending_by_an_adapter_error_is_credited_once_when_the_retry_and_the_worker_race(
        api, app, clock):
    """After the 503 the client's retry and the worker finish the same top-up at the same moment: both have the bank's
    "succeeded" in hand (the barrier holds each inside the bank until the other arrives), one credits."""
    import threading

    from tests.integration.test_escrow_races import in_app, post

    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL): SQLite runs one writer at a time anyway")
    alice = api.verified()
    bank: SimulatedBank = app.extensions["bank_gateway"]
    app.extensions["bank_gateway"] = _RaisingBank(bank, ConnectionResetError(104, "reset"), "debit", after=True)
    _unavailable(api.money("/api/v1/topups", alice, key="top", amount=1500, bank_card_id=alice["card_id"]))
    clock.advance(minutes=2)
    api.relogin(alice)
    both_asked = threading.Barrier(2, timeout=20)

    class _BothAtOnce(_BankThatMixesUpAnswers):
        def debit(self, bank_code, card_token, amount, reference):
            answer = self.bank.debit(bank_code, card_token, amount, reference)
            both_asked.wait()
            return answer

    app.extensions["bank_gateway"] = _BothAtOnce(bank, None)
    answers: dict[str, object] = {}
    retry = threading.Thread(target=lambda: answers.update(client=post(
        app, alice, "/api/v1/topups", key="top", amount=1500, bank_card_id=alice["card_id"], **PP)))
    worker = threading.Thread(target=lambda: answers.update(worker=in_app(app, retry_pending_topups)()))
    retry.start(), worker.start()
    retry.join(30), worker.join(30)
    status, body = answers["client"]
    assert (status, body["status"]) == (201, "succeeded"), body
    assert answers["worker"] == 1
    assert api.balance(alice) == 1500 and _alerts(app, "topup_credited") == 1
    assert bank.total_debited(_rows(app, BankCard)[0].bank_token) == 1500
    with app.app_context():
        assert check_invariants() == []
