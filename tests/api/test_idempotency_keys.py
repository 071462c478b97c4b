"""What a mobile client gets back from the Idempotency-Key rules (DESIGN 7) over HTTP: a key belongs to one user and
one request (method, path and body, the payment password left out); only a successful answer is kept, so a request
refused with a 4xx can be sent again with the same key once the client has fixed what was wrong, and runs once; keys
that are not keys are refused with a stable code before any password try is spent; answers are kept 24 hours."""

import json

import pytest
from sqlalchemy import func, select

from core.db import db
from core.idempotency import IdempotencyRecord, purge_expired
from notifications import dispatcher
from notifications.models import Alert
from tests.api.escrow_helpers import books_clean, open_trade, paid_and_shipped
from tests.factories import PAYMENT_PASSWORD
from wallet.models import Transfer

WRONG_PASSWORD = "246813"


def send(api, who, path, key, password=PAYMENT_PASSWORD, **body):
    headers = dict(who["headers"])
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.client.post(path, headers=headers, json={"payment_password": password, **body})


def replayed(response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


def count(app, model, *where):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def payments(app):
    return count(app, Transfer, Transfer.kind == "payment")


def alerts(app, phone, event):
    with app.app_context():
        dispatcher.expand()  # as a dispatcher does before sending: the changes' events become alerts
    return count(app, Alert, Alert.to_phone == phone, Alert.event == event)


@pytest.fixture
def payer(api):
    alice = api.verified()
    assert api.money("/api/v1/topups", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 201
    return alice


# --- the key's scope --------------------------------------------------------------------------------------------


def test_the_same_key_from_two_users_is_two_requests(api, app):
    alice, bob, carol = api.verified(), api.verified(), api.register()
    for who in (alice, bob):
        assert api.money("/api/v1/topups", who, amount=1000, bank_card_id=who["card_id"]).status_code == 201
    first = send(api, alice, "/api/v1/transfers", "order-1", amount=100, to_phone=carol["phone"])
    second = send(api, bob, "/api/v1/transfers", "order-1", amount=100, to_phone=carol["phone"])
    assert (first.status_code, second.status_code) == (201, 201)
    assert not replayed(second) and first.json["id"] != second.json["id"]
    assert (api.balance(alice), api.balance(bob), api.balance(carol)) == (900, 900, 200)


def test_a_key_used_for_a_payment_is_refused_on_a_withdrawal_and_nothing_moves(api, app, payer):
    bob = api.register()
    assert send(api, payer, "/api/v1/transfers", "k-1", amount=100, to_phone=bob["phone"]).status_code == 201
    other = send(api, payer, "/api/v1/withdrawals", "k-1", amount=100, bank_card_id=payer["card_id"])
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    assert api.balance(payer) == 900
    assert api.client.get("/api/v1/wallet", headers=payer["headers"]).json["pending"] == 0


def test_a_key_that_confirmed_one_trade_is_refused_on_another_and_that_trade_stays_open(api, app):
    buyer, seller = api.verified(real_name="李四"), api.verified(real_name="王五")
    assert api.money("/api/v1/topups", buyer, amount=50000, bank_card_id=buyer["card_id"]).status_code == 201
    first, second = paid_and_shipped(api, buyer, seller), paid_and_shipped(api, buyer, seller)
    assert send(api, buyer, f"/api/v1/trades/{first}/confirm", "confirm").status_code == 200
    other = send(api, buyer, f"/api/v1/trades/{second}/confirm", "confirm")
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    state = api.client.get(f"/api/v1/trades/{second}", headers=buyer["headers"]).json
    assert state["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    books_clean(app)


# --- a 4xx keeps nothing: fix the problem and send the same key again -------------------------------------------


def test_a_payment_refused_for_want_of_funds_runs_once_when_retried_after_a_top_up(api, app):
    alice, bob = api.verified(), api.register()
    refused = send(api, alice, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert (refused.status_code, refused.json["code"]) == (422, "insufficient_funds")
    assert api.money("/api/v1/topups", alice, amount=1000, bank_card_id=alice["card_id"]).status_code == 201
    paid = send(api, alice, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert paid.status_code == 201 and not replayed(paid)
    again = send(api, alice, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert again.status_code == 201 and replayed(again) and again.json == paid.json
    assert (api.balance(alice), api.balance(bob), payments(app)) == (900, 100, 1)
    assert alerts(app, alice["phone"], "balance_payment") == 1
    books_clean(app)


def test_the_payment_password_is_not_part_of_the_request_a_right_one_after_a_wrong_one_runs_once(api, app, payer):
    bob = api.register()
    wrong = send(api, payer, "/api/v1/transfers", "pay-bob", WRONG_PASSWORD, amount=100, to_phone=bob["phone"])
    assert (wrong.status_code, wrong.json["code"]) == (401, "invalid_credentials")
    paid = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert paid.status_code == 201 and not replayed(paid)
    again = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert replayed(again) and again.json == paid.json
    assert (api.balance(bob), payments(app)) == (100, 1)


def test_a_payment_refused_while_locked_runs_once_when_retried_after_the_lock_lifts(api, app, clock, payer):
    bob = api.register()
    for _ in range(3):
        locked = send(api, payer, "/api/v1/transfers", "pay-bob", WRONG_PASSWORD, amount=100, to_phone=bob["phone"])
    assert (locked.status_code, locked.json["code"]) == (423, "payment_password_locked")
    still = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert (still.status_code, still.json["code"]) == (423, "payment_password_locked")
    clock.advance(hours=3, minutes=1)
    api.relogin(payer)
    api.relogin(bob)
    paid = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert paid.status_code == 201 and not replayed(paid)
    assert replayed(send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"]))
    assert (api.balance(bob), payments(app)) == (100, 1)


# --- the same body ----------------------------------------------------------------------------------------------


def test_the_same_body_spelt_differently_replays(api, app, payer):
    bob = api.register()
    first = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert first.status_code == 201
    # Another order, other whitespace, the optional note as null and the default currency spelt out.
    raw = (f'{{ "to_phone" : "{bob["phone"]}",\n  "currency": "CNY", "note": null,\t"amount":100 ,'
           f'"payment_password": "{PAYMENT_PASSWORD}"}}')
    again = api.client.post("/api/v1/transfers", data=raw, content_type="application/json",
                            headers={**payer["headers"], "Idempotency-Key": "pay-bob"})
    assert again.status_code == 201 and replayed(again) and again.json == first.json
    assert json.loads(raw)["amount"] == first.json["amount"]
    assert (api.balance(bob), payments(app)) == (100, 1)


def test_the_same_payee_spelt_another_way_replays(api, app, payer):
    """Found by an audit: the fingerprint held the number as typed, so a retry that wrote the payee's number with
    spaces was refused as another request (422 idempotency_key_reused) although it pays the same person."""
    bob = api.register()
    first = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"])
    assert first.status_code == 201
    spaced = f"{bob['phone'][:2]} {bob['phone'][2:5]} {bob['phone'][5:8]} {bob['phone'][8:]}"
    again = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=spaced)
    assert again.status_code == 201 and replayed(again) and again.json == first.json
    other = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=api.register()["phone"])
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    assert (api.balance(bob), payments(app)) == (100, 1)


def test_another_note_is_another_body(api, app, payer):
    bob = api.register()
    assert send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"]).status_code == 201
    other = send(api, payer, "/api/v1/transfers", "pay-bob", amount=100, to_phone=bob["phone"], note="rent")
    assert (other.status_code, other.json["code"]) == (422, "idempotency_key_reused")
    assert payments(app) == 1


# --- keys that are not keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "status", "code"), [
    (None, 400, "idempotency_key_missing"),
    ("", 400, "idempotency_key_missing"),
    (" ", 422, "invalid_idempotency_key"),
    ("  padded  ", 422, "invalid_idempotency_key"),
    ("with space", 422, "invalid_idempotency_key"),
    ("k" * 256, 422, "invalid_idempotency_key"),
    ("ключ-1", 422, "invalid_idempotency_key"),
    ("clé", 422, "invalid_idempotency_key"),
    ("tab\t", 422, "invalid_idempotency_key"),
    ("a/b", 422, "invalid_idempotency_key"),
], ids=["missing", "empty", "blank", "padded", "space", "too-long", "cyrillic", "latin-1", "tab", "slash"])
def test_a_key_that_is_not_a_key_is_refused_with_a_stable_code_before_the_password_is_tried(api, app, payer, key,
                                                                                            status, code):
    bob = api.register()
    for _ in range(3):  # a wrong password each time: none of them may count toward the lock
        response = send(api, payer, "/api/v1/transfers", key, WRONG_PASSWORD, amount=100, to_phone=bob["phone"])
        assert response.status_code == status, response.json
        assert response.content_type == "application/problem+json"
        found = response.json["code"] if status == 400 else response.json["errors"][0]["code"]
        assert found == code
    wrong = send(api, payer, "/api/v1/transfers", "good-key", WRONG_PASSWORD, amount=100, to_phone=bob["phone"])
    assert (wrong.status_code, wrong.json["attempts_left"]) == (401, 2)
    assert payments(app) == 0


def test_the_longest_key_the_document_allows_is_accepted(api, app, payer):
    bob = api.register()
    key = "K" * 255
    first = send(api, payer, "/api/v1/transfers", key, amount=100, to_phone=bob["phone"])
    again = send(api, payer, "/api/v1/transfers", key, amount=100, to_phone=bob["phone"])
    assert (first.status_code, again.status_code, replayed(again)) == (201, 201, True)
    assert payments(app) == 1


# --- kept 24 hours ----------------------------------------------------------------------------------------------


def _money_requests(api, app):
    """One of each money request a buyer makes (key, path, body), done once; returns them with their answers."""
    buyer, seller, bob = api.verified(real_name="李四"), api.verified(real_name="王五"), api.register()
    requests = [("topup", lambda: "/api/v1/topups", {"amount": 50000, "bank_card_id": buyer["card_id"]}),
                ("transfer", lambda: "/api/v1/transfers", {"amount": 100, "to_phone": bob["phone"]}),
                ("withdrawal", lambda: "/api/v1/withdrawals", {"amount": 100, "bank_card_id": buyer["card_id"]}),
                ("pay", lambda: f"/api/v1/trades/{open_trade(api, buyer, seller)}/pay", {}),
                ("confirm", lambda: f"/api/v1/trades/{paid_and_shipped(api, buyer, seller)}/confirm", {})]
    done = []
    for key, path_of, body in requests:
        path = path_of()  # after the top-up: opening and paying the trades needs its money
        response = send(api, buyer, path, key, **body)
        assert response.status_code in (200, 201, 202), response.json
        done.append((key, path, body, response))
    return buyer, done


def test_every_money_answer_is_replayed_at_23_hours_59_and_purged_after_24_hours(api, app, clock):
    buyer, done = _money_requests(api, app)
    with app.app_context():
        kept = db.session.scalar(select(func.count()).select_from(IdempotencyRecord))
    clock.advance(hours=23, minutes=59)
    with app.app_context():
        assert purge_expired() == 0
    api.relogin(buyer)
    balance = api.balance(buyer)
    for key, path, body, first in done:
        again = send(api, buyer, path, key, **body)
        assert (again.status_code, replayed(again)) == (first.status_code, True), (key, again.json)
        assert again.json["id"] == first.json["id"]
    assert api.balance(buyer) == balance
    clock.advance(minutes=2)
    with app.app_context():
        assert purge_expired() == kept
        assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
    books_clean(app)
