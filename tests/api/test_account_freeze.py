"""Account freezes (DESIGN R13, ``security.freezes``): staff stop an account's money from leaving it; money still comes
in, the owner is told by SMS, and nothing the freeze refuses counts toward the payment-password lock."""

from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from core.db import db
from security import freezes
from tests.api.escrow_helpers import PP, act, books_clean, open_trade, paid_and_shipped, trade
from tests.api.test_funds import drain_withdrawals, invariants_hold
from tests.factories import PAYMENT_PASSWORD
from tests.factories_ids import make_card_number
from wallet.banks import BankUnavailable


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["users", *args])


def frozen_answer(response):
    assert (response.status_code, response.json["code"]) == (403, "account_frozen"), response.json
    assert datetime.fromisoformat(response.json["frozen_at"].replace("Z", "+00:00"))


def test_a_frozen_account_can_move_no_money_out_but_still_receives(api, app, inbox):
    alice, bob = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=50000, bank_card_id=alice["card_id"]).status_code == 201

    frozen = cli(app, "freeze", alice["phone"], "--reason", "cash-out pattern under review")
    assert frozen.exit_code == 0 and "frozen since" in frozen.output
    assert [m["event"] for m in inbox.messages(to=alice["phone"])][-1] == "account_frozen"
    assert api.client.get("/api/v1/me", headers=alice["headers"]).json["frozen_since"]

    refused = [
        api.money("/api/v1/transfers", alice, to_phone=bob["phone"], amount=100),
        api.money("/api/v1/topups", alice, amount=100, bank_card_id=alice["card_id"]),
        api.money("/api/v1/withdrawals", alice, amount=100, bank_card_id=alice["card_id"]),
        act(api, alice, open_trade(api, alice, bob), "pay", key="pay-frozen", **PP),
    ]
    for response in refused:
        frozen_answer(response)
    assert api.balance(alice) == 50000

    # Money still comes in, and the owner can still sign in, read and check the payment password.
    assert api.money("/api/v1/transfers", bob, to_phone=alice["phone"], amount=0).status_code == 422
    assert api.money("/api/v1/topups", bob, amount=3000, bank_card_id=bob["card_id"]).status_code == 201
    assert api.money("/api/v1/transfers", bob, to_phone=alice["phone"], amount=2500).status_code == 201
    assert api.balance(alice) == 52500
    assert api.client.post("/api/v1/me/payment-password/verify", headers=alice["headers"],
                           json={"payment_password": PAYMENT_PASSWORD}).status_code == 200

    lifted = cli(app, "unfreeze", alice["phone"])
    assert lifted.exit_code == 0 and "unfrozen" in lifted.output
    assert [m["event"] for m in inbox.messages(to=alice["phone"])][-1] == "account_unfrozen"
    assert api.client.get("/api/v1/me", headers=alice["headers"]).json["frozen_since"] is None
    assert api.money("/api/v1/transfers", alice, to_phone=bob["phone"], amount=100).status_code == 201
    invariants_hold(app)


def test_a_frozen_seller_still_gives_the_buyer_money_back_but_a_frozen_buyer_cannot_release_escrow(api, app):
    """A freeze stops money leaving the frozen account. A seller agreeing to a refund (or receiving the goods back)
    moves the buyer's money out of escrow back to the buyer, never the seller's own: the freeze must not keep an
    innocent buyer's money locked up. Confirming receipt does move the frozen buyer's money on, so it stays refused."""
    buyer, seller = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    refunded_now = paid_and_shipped(api, buyer, seller)
    sent_back = paid_and_shipped(api, buyer, seller)
    to_confirm = paid_and_shipped(api, buyer, seller, amount=1000, shipping_fee=0)
    assert api.balance(buyer) == 50000 - 2 * 20900 - 1000
    assert cli(app, "freeze", seller["phone"], "--reason", "review").exit_code == 0

    asked = act(api, buyer, refunded_now, "refunds", amount=20900, reason="never arrived").json
    wrong = act(api, seller, refunded_now, f"refunds/{asked['id']}/agree", payment_password="000000")
    assert (wrong.status_code, wrong.json["code"]) == (401, "invalid_credentials")  # the password still guards it
    agreed = act(api, seller, refunded_now, f"refunds/{asked['id']}/agree", **PP)
    assert (agreed.status_code, agreed.json["status"]) == (200, "REFUND_SUCCESS"), agreed.json

    asked = act(api, buyer, sent_back, "refunds", amount=20900, reason="broken", return_goods=True).json
    agreed = act(api, seller, sent_back, f"refunds/{asked['id']}/agree", key="agree-frozen", **PP)
    assert (agreed.status_code, agreed.json["status"]) == (200, "WAIT_BUYER_RETURN_GOODS"), agreed.json
    act(api, buyer, sent_back, f"refunds/{asked['id']}/return", carrier="EMS", tracking_number="EMS99")
    received = act(api, seller, sent_back, f"refunds/{asked['id']}/receive-return", **PP)
    assert (received.status_code, received.json["status"]) == (200, "REFUND_SUCCESS"), received.json
    assert api.balance(buyer) == 50000 - 1000

    assert cli(app, "freeze", buyer["phone"], "--reason", "review").exit_code == 0
    before = trade(api, buyer, to_confirm)
    frozen_answer(act(api, buyer, to_confirm, "confirm", key="confirm-frozen", **PP))
    assert trade(api, buyer, to_confirm) == before and api.balance(seller) == 0
    books_clean(app)


def test_wrong_payment_passwords_of_a_frozen_account_never_reach_the_lock(api, app, inbox):
    alice, bob = api.verified(), api.register()
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    headers = {**alice["headers"], "Idempotency-Key": "k"}
    for _ in range(4):
        frozen_answer(api.client.post("/api/v1/transfers", headers=headers, json={
            "to_phone": bob["phone"], "amount": 100, "payment_password": "000111"}))
    assert not inbox.messages(to=alice["phone"], event="payment_locked")
    assert cli(app, "unfreeze", alice["phone"]).exit_code == 0
    # No try was counted: the right password works at once, two wrong ones still leave one.
    wrong = api.client.post("/api/v1/me/payment-password/verify", headers=alice["headers"],
                            json={"payment_password": "000111"})
    assert (wrong.status_code, wrong.json["attempts_left"]) == (401, 2)


def test_binding_a_card_is_refused_while_frozen(api, app):
    alice = api.verified()
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    response = api.client.post("/api/v1/me/bank-cards", headers=alice["headers"], json={
        "card_number": make_card_number(), "holder_name": "张三", "bank_code": "CCB",
        "payment_password": PAYMENT_PASSWORD})
    frozen_answer(response)


def test_a_withdrawal_not_yet_sent_to_the_bank_is_failed_back_when_the_account_is_frozen(api, app, clock, inbox):
    alice = api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"]).json
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    bank = app.extensions["bank_gateway"]
    operations = bank.operation_count()

    drain_withdrawals(app, clock)
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    assert (done["status"], done["failure_reason"]) == ("failed", "account_frozen")
    assert api.client.get("/api/v1/wallet", headers=alice["headers"]).json == {
        "available": 20000, "pending": 0, "currency": "CNY"}
    assert inbox.messages(to=alice["phone"], event="withdrawal_failed")
    assert bank.operation_count() == operations, "the bank was asked to pay out for a frozen account"
    invariants_hold(app)


def test_a_withdrawal_whose_first_attempt_never_reached_the_bank_is_failed_back_once_frozen(api, app, clock, inbox):
    """Its first submission timed out without reaching the bank, so it was still to be sent again when the account was
    frozen. It is not sent again: the bank is asked whether it has it, and as it has not, the money goes back, once the
    first submission can no longer reach the bank (``wallet.funds._IN_FLIGHT``: 12 minutes after it was sent)."""
    alice = api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"]).json
    bank = app.extensions["bank_gateway"]
    operations = bank.operation_count()
    bank.timeout_references.add(withdrawal["id"])  # the bank does not answer, and acts on nothing
    drain_withdrawals(app, clock, rounds=1)
    assert bank.operation_count() == operations
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    bank.timeout_references.discard(withdrawal["id"])  # it answers again

    drain_withdrawals(app, clock, rounds=9)
    waiting = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    assert waiting["status"] == "pending"  # the bank says it has none, but the first submission might still arrive
    drain_withdrawals(app, clock, rounds=5)
    api.relogin(alice)  # a quarter of an hour on: a fresh access token
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    assert (done["status"], done["failure_reason"]) == ("failed", "account_frozen")
    assert bank.operation_count() == operations, "the bank was asked to pay out for a frozen account"
    assert api.client.get("/api/v1/wallet", headers=alice["headers"]).json == {
        "available": 20000, "pending": 0, "currency": "CNY"}
    assert len(inbox.messages(to=alice["phone"], event="withdrawal_failed")) == 1
    invariants_hold(app)


def test_a_withdrawal_the_bank_took_without_answering_runs_its_course_once_frozen(api, app, clock, monkeypatch):
    """The first submission reached the bank but its answer was lost: the bank has the payout, so the freeze does not
    take it back (a freeze stops what starts after it), and it is not submitted a second time."""
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"]).json
    bank = app.extensions["bank_gateway"]  # the simulated bank
    pay_out, submissions = bank.payout, []

    def answer_lost(bank_code, card_token, amount, reference):
        submissions.append(reference)
        pay_out(bank_code, card_token, amount, reference)
        raise BankUnavailable("The bank did not answer in time.")

    monkeypatch.setattr(bank, "payout", answer_lost)
    drain_withdrawals(app, clock, rounds=1)
    assert submissions == [withdrawal["id"]]
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0

    drain_withdrawals(app, clock)
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    assert done["status"] == "succeeded"
    assert submissions == [withdrawal["id"]]
    assert api.balance(alice) == 15000
    invariants_hold(app)


def test_a_withdrawal_already_with_the_bank_runs_its_course(api, app, clock):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"]).json
    drain_withdrawals(app, clock, rounds=1)  # submitted (the simulated bank may already have paid it)
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    drain_withdrawals(app, clock)
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    assert done["status"] == "succeeded"
    assert api.balance(alice) == 15000
    invariants_hold(app)


def test_freezing_twice_keeps_one_freeze_and_sends_one_alert(api, app, inbox):
    alice = api.register()
    first = cli(app, "freeze", alice["phone"], "--reason", "one")
    second = cli(app, "freeze", alice["phone"], "--reason", "two")
    assert first.exit_code == second.exit_code == 0
    assert first.output.split(" since ")[1] == second.output.split(" since ")[1]  # the first freeze stands
    assert len(inbox.messages(to=alice["phone"], event="account_frozen")) == 1
    assert "was not frozen" in cli(app, "unfreeze", api.register()["phone"]).output
    assert cli(app, "unfreeze", alice["phone"]).exit_code == 0
    assert cli(app, "freeze", alice["phone"], "--reason", "again").exit_code == 0  # a new freeze after a lift
    with app.app_context():
        rows = db.session.execute(text(
            "SELECT reason, CASE WHEN lifted_at IS NULL THEN 'active' ELSE 'lifted' END FROM account_freezes f"
            " JOIN users u ON u.id = f.user_id WHERE u.phone = :p ORDER BY reason"), {"p": alice["phone"]}).all()
    assert [tuple(r) for r in rows] == [("again", "active"), ("one", "lifted")]


def test_a_freeze_is_lifted_even_when_the_clock_stepped_back_since(api, app, clock, inbox):
    """Found by the time audit: with the clock a second behind the freeze (NTP stepped it back, or staff lift it on
    another host), ``unfreeze`` failed on the table's CHECK that a freeze ends no earlier than it began: a
    traceback, and the account stayed frozen. It is lifted, at the moment it began."""
    alice = api.verified()
    assert cli(app, "freeze", alice["phone"], "--reason", "looking into it").exit_code == 0
    clock.advance(seconds=-1)
    lifted = cli(app, "unfreeze", alice["phone"])
    assert lifted.exit_code == 0, (lifted.output, lifted.exception)
    assert api.client.get("/api/v1/me", headers=alice["headers"]).json["frozen_since"] is None
    assert len(inbox.messages(to=alice["phone"], event="account_unfrozen")) == 1
    with app.app_context():
        frozen_at, lifted_at = db.session.execute(text("SELECT frozen_at, lifted_at FROM account_freezes")).one()
    assert lifted_at == frozen_at


@pytest.mark.parametrize("args, message", [
    (["freeze", "+8613800000000", "--reason", "x"], "no account"),
    (["freeze", "{phone}", "--reason", "   "], "give a reason"),
    (["freeze", "{phone}"], "--reason"),
])
def test_the_freeze_command_refuses_in_one_line(api, app, args, message):
    alice = api.register()
    result = cli(app, *[a.format(phone=alice["phone"]) for a in args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_the_database_refuses_a_second_active_freeze_and_a_freeze_without_reason(api, app):
    alice = api.register()
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    insert = ("INSERT INTO account_freezes (id, user_id, reason, frozen_at)"
              " SELECT :id, id, :reason, created_at FROM users WHERE phone = :phone")
    with app.app_context():
        for row_id, reason in (("frz_second", "another"), ("frz_empty", "")):
            with pytest.raises(IntegrityError):
                db.session.execute(text(insert), {"id": row_id, "reason": reason, "phone": alice["phone"]})
            db.session.rollback()
        with pytest.raises(IntegrityError):  # lifted before it began
            db.session.execute(text("UPDATE account_freezes SET lifted_at = frozen_at - INTERVAL '1 day'")
                               if db.engine.dialect.name == "postgresql" else
                               text("UPDATE account_freezes SET lifted_at = '2000-01-01 00:00:00.000000'"))
        db.session.rollback()


def test_a_trade_paid_before_the_seller_was_frozen_still_finishes_and_pays_the_seller(api, app, people):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="k1", **PP).status_code == 200
    assert cli(app, "freeze", seller["phone"], "--reason", "review").exit_code == 0
    assert act(api, seller, trade_id, "ship", carrier="SF Express", tracking_number="SF1234567890").status_code == 200
    confirmed = act(api, buyer, trade_id, "confirm", key="k2", **PP)
    assert confirmed.status_code == 200 and confirmed.json["status"] == "TRADE_FINISHED"
    assert api.balance(seller) == 20900  # money came in to the frozen seller
    books_clean(app)


def test_the_frozen_accounts_are_listed_longest_frozen_first_with_their_reasons(api, app, clock):
    alice, bob, carol = api.register(), api.register(), api.register()
    assert "0 frozen" in cli(app, "frozen").output
    assert cli(app, "freeze", bob["phone"], "--reason", "chargebacks").exit_code == 0
    clock.advance(minutes=5)
    assert cli(app, "freeze", alice["phone"], "--reason", "cash-out pattern").exit_code == 0
    assert cli(app, "freeze", carol["phone"], "--reason", "lifted soon").exit_code == 0
    assert cli(app, "unfreeze", carol["phone"]).exit_code == 0
    listed = cli(app, "frozen")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[-1] == "2 frozen"
    assert [(line.split()[1], line.split("  ")[-1]) for line in lines[:-1]] == [
        (bob["phone"], "chargebacks"), (alice["phone"], "cash-out pattern")]


def test_a_withdrawal_never_sent_is_failed_back_at_once_once_frozen_without_waiting_for_the_bank(api, app, clock):
    """A withdrawal the worker never claimed was never sent: frozen, it goes back to the wallet without the bank."""
    alice = api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"]).json
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    app.extensions["bank_gateway"].timeout_references.add(withdrawal["id"])  # asked, the bank would not answer
    drain_withdrawals(app, clock, rounds=1)
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    assert (done["status"], done["failure_reason"]) == ("failed", "account_frozen")
    assert api.balance(alice) == 20000


def test_a_withdrawal_asked_for_after_a_freeze_was_lifted_is_paid_out(api, app, clock):
    """A lifted freeze stops nothing: the worker sends the withdrawal of an account no longer frozen."""
    alice = api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    assert cli(app, "freeze", alice["phone"], "--reason", "review").exit_code == 0
    assert cli(app, "unfreeze", alice["phone"]).exit_code == 0
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"])
    assert withdrawal.status_code == 202, withdrawal.json
    drain_withdrawals(app, clock, rounds=1)
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal.json['id']}", headers=alice["headers"]).json
    assert (done["status"], done["failure_reason"]) == ("succeeded", None)


def test_a_freeze_needs_a_reason_that_is_not_blank(api, app, inbox):
    """Every freeze is kept with its reason: a blank one is refused, and the account is not frozen."""
    alice = api.verified(locale="en")
    with app.app_context():
        with pytest.raises(ValueError, match="reason"):
            freezes.freeze(alice["user"]["id"], "   ")
        assert freezes.frozen_accounts() == []
    assert not inbox.messages(to=alice["phone"], event="account_frozen")


@pytest.mark.parametrize("path", ["/api/v1/transfers", "/api/v1/topups", "/api/v1/trades/{trade}/pay"])
def test_the_retry_of_a_payment_made_before_the_freeze_answers_what_happened(api, app, path):
    """Found by an audit: a client that lost the answer to a payment and retried it with its key after the account was
    frozen read 403 ``account_frozen``, and took the payment, made, for one refused. The retry answers the stored
    answer (it moves nothing); a new request is refused."""
    alice, bob = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=50000, bank_card_id=alice["card_id"]).status_code == 201
    body = {"/api/v1/transfers": {"to_phone": bob["phone"], "amount": 1200},
            "/api/v1/topups": {"amount": 1200, "bank_card_id": alice["card_id"]},
            "/api/v1/trades/{trade}/pay": {}}[path]
    path = path.format(trade=open_trade(api, alice, bob) if "{trade}" in path else "")
    first = api.money(path, alice, key="lost-answer", **body)
    assert first.status_code in (200, 201), first.json
    balance = api.balance(alice)

    assert cli(app, "freeze", alice["phone"], "--reason", "under review").exit_code == 0
    retry = api.money(path, alice, key="lost-answer", **body)
    assert (retry.status_code, retry.json) == (first.status_code, first.json)
    assert retry.headers["Idempotent-Replayed"] == "true"
    frozen_answer(api.money(path, alice, key="a-new-one", **body))
    assert api.balance(alice) == balance
    invariants_hold(app)


def test_the_retry_of_a_payment_made_before_the_payment_password_locked_answers_what_happened(api, app):
    alice, bob = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=50000, bank_card_id=alice["card_id"]).status_code == 201
    first = api.money("/api/v1/transfers", alice, key="lost-answer", to_phone=bob["phone"], amount=1200)
    assert first.status_code == 201, first.json
    for n in range(3):
        wrong = api.client.post("/api/v1/transfers", headers={**alice["headers"], "Idempotency-Key": f"wrong-{n}"},
                                json={"payment_password": "000000", "to_phone": bob["phone"], "amount": 1})
        assert wrong.status_code in (401, 423), wrong.json
    assert wrong.status_code == 423
    retry = api.money("/api/v1/transfers", alice, key="lost-answer", to_phone=bob["phone"], amount=1200)
    assert (retry.status_code, retry.json) == (201, first.json)
    assert retry.headers["Idempotent-Replayed"] == "true"
    locked = api.money("/api/v1/transfers", alice, key="a-new-one", to_phone=bob["phone"], amount=1200)
    assert (locked.status_code, locked.json["code"]) == (423, "payment_password_locked")
    assert api.balance(alice) == 50000 - 1200
    invariants_hold(app)
