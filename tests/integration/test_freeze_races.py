"""Account freezes raced with the overlap forced (``first_pauses_inside``): two staff freezing one account at once,
a payment whose password check began before the freeze, and the withdrawal worker deciding while a freeze commits.
PostgreSQL only: SQLite runs one write transaction at a time."""

from __future__ import annotations

import pytest

import security.freezes as freezes
import security.secrets_guard as secrets_guard
import wallet.funds as funds
from core.db import run_in_transaction
from tests.api.test_funds import drain_withdrawals, invariants_hold
from tests.integration.test_money_races_audit import first_pauses_inside
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite

pytestmark = pytest.mark.postgres


def _user_id(api, account):
    return api.client.get("/api/v1/me", headers=account["headers"]).json["id"]


def _in_app(app, call):
    def run():
        with app.app_context():
            return call()
    return run


def test_two_freezes_at_once_make_one_freeze_and_one_alert(api, app, monkeypatch, inbox):
    alice = api.register()
    user_id = _user_id(api, alice)
    first, second, waited = first_pauses_inside(
        monkeypatch, freezes, "enqueue", _in_app(app, lambda: freezes.freeze(user_id, "first")),
        _in_app(app, lambda: freezes.freeze(user_id, "second")))
    assert waited, "the second freeze did not wait for the first one's row"
    assert first == second  # the second found the first one's freeze, and changed nothing
    assert len(inbox.messages(to=alice["phone"], event="account_frozen")) == 1
    with app.app_context():
        assert run_in_transaction(lambda: freezes.frozen_since(user_id), read_only=True) == first


def test_a_payment_checked_before_the_freeze_completes_and_the_next_one_is_refused(api, app, monkeypatch):
    alice, bob = api.verified(), api.register()
    assert api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"]).status_code == 201
    user_id = _user_id(api, alice)
    client = app.test_client()

    def pay():
        response = client.post("/api/v1/transfers", headers={**alice["headers"], "Idempotency-Key": "in-flight"},
                               json={"to_phone": bob["phone"], "amount": 700, "payment_password": "135790"})
        return response.status_code

    paid, frozen_at, _ = first_pauses_inside(monkeypatch, secrets_guard, "passwords", pay,
                                             _in_app(app, lambda: freezes.freeze(user_id, "review")))
    assert paid == 201 and frozen_at is not None  # the freeze stops what starts after it
    later = api.money("/api/v1/transfers", alice, to_phone=bob["phone"], amount=700)
    assert (later.status_code, later.json["code"]) == (403, "account_frozen")
    assert (api.balance(alice), api.balance(bob)) == (9300, 700)
    invariants_hold(app)


@pytest.mark.parametrize("freeze_lands", ["before the worker looks", "after the worker looked"])
def test_the_withdrawal_worker_and_a_freeze_pay_out_once_or_give_back_once(api, app, clock, monkeypatch, freeze_lands):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=20000, bank_card_id=alice["card_id"]).status_code == 201
    withdrawal = api.money("/api/v1/withdrawals", alice, amount=5000, bank_card_id=alice["card_id"]).json
    user_id = _user_id(api, alice)
    clock.advance(seconds=60)
    first_pauses_inside(monkeypatch, funds.freezes, "frozen_since", _in_app(app, funds.process_withdrawals),
                        _in_app(app, lambda: freezes.freeze(user_id, "review")),
                        after=freeze_lands == "after the worker looked")
    drain_withdrawals(app, clock)
    done = api.client.get(f"/api/v1/withdrawals/{withdrawal['id']}", headers=alice["headers"]).json
    bank = app.extensions["bank_gateway"]
    with app.app_context():
        card_token = funds.get_card_for_user(user_id, alice["card_id"]).bank_token
    if freeze_lands == "after the worker looked":  # it had read "not frozen": the payout runs its course
        assert done["status"] == "succeeded"
        assert (api.balance(alice), bank.total_paid_out(card_token)) == (15000, 5000)
    else:
        assert (done["status"], done["failure_reason"]) == ("failed", "account_frozen")
        assert (api.balance(alice), bank.total_paid_out(card_token)) == (20000, 0)
    invariants_hold(app)
