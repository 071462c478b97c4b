"""Bank cards over HTTP: binding needs the payment password, a verified identity and the bank's holder
confirmation; cards are listed masked, removed with an SMS, and another user's card is a 404."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from core.db import db
from core.errors import NotFound
from tests.factories import PAYMENT_PASSWORD
from tests.factories_ids import break_luhn, make_card_number, make_id_number
from wallet import cards
from wallet.banks import SimulatedBank

URL = "/api/v1/me/bank-cards"
NO_CARDS = {"data": [], "has_more": False, "next_starting_after": None}
WRONG_PIN = "246813"


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def verified_user(api, real_name="张三", **register):
    account = api.register(**register)
    response = api.client.post("/api/v1/me/identity", json={"real_name": real_name, "id_number": make_id_number()},
                               headers=account["headers"])
    assert response.status_code == 201, response.json
    return {**account, "real_name": real_name}


def bind(api, account, card_number=None, *, holder_name=None, bank_code="ICBC", payment_password=PAYMENT_PASSWORD):
    return api.client.post(URL, headers=account["headers"], json={
        "card_number": card_number or make_card_number(),
        "holder_name": account.get("real_name", "张三") if holder_name is None else holder_name,
        "bank_code": bank_code,
        "payment_password": payment_password,
    })


def card_rows(app):
    with app.app_context():
        return [dict(row._mapping) for row in db.session.execute(text("SELECT * FROM bank_cards"))]


def test_binding_a_card_answers_it_masked_lists_it_and_alerts_by_sms(api, app, inbox, clock):
    account = verified_user(api)
    number = make_card_number(length=19)

    response = bind(api, account, number, bank_code="CMB")

    assert response.status_code == 201, response.json
    card = response.json
    assert card == {"id": card["id"], "bank_code": "CMB", "masked": f"**** {number[-4:]}", "holder_name": "*三",
                    "created_at": iso(clock.now())}
    listing = api.client.get(URL, headers=account["headers"])
    assert listing.status_code == 200
    assert listing.json == {**NO_CARDS, "data": [card]}
    for raw in (response.get_data(as_text=True), listing.get_data(as_text=True)):
        assert number not in raw and number[:12] not in raw
    [alert] = inbox.messages(to=account["phone"], event="card_bound")
    assert "招商银行" in alert["body"] and f"**** {number[-4:]}" in alert["body"]
    assert all(number not in message["body"] for message in inbox.messages())


def test_card_numbers_typed_with_spaces_are_accepted(api, app):
    account = verified_user(api)
    number = make_card_number()
    spaced = " ".join(number[i:i + 4] for i in range(0, len(number), 4))
    assert bind(api, account, spaced).json["masked"] == f"**** {number[-4:]}"
    [row] = card_rows(app)
    assert row["bank_token"].startswith("sim-ICBC-") and row["last4"] == number[-4:]  # the bank got the digits


def test_the_full_card_number_is_stored_nowhere(api, app):
    account = verified_user(api)
    number = make_card_number()
    card_id = bind(api, account, number).json["id"]
    assert api.money("/api/v1/topups", account, amount=500, bank_card_id=card_id).status_code == 201
    with app.app_context():
        values = [str(value) for table in db.metadata.sorted_tables
                  for row in db.session.execute(table.select()) for value in row]
    assert any(value.endswith(number[-4:]) for value in values)  # the search does see the card's rows
    assert not [value for value in values if number[:-4] in value]


def test_binding_needs_a_verified_identity(api, app):
    account = api.register()
    response = bind(api, account)
    assert response.status_code == 422
    assert response.json["code"] == "identity_not_verified"
    assert card_rows(app) == []


def test_third_wrong_payment_password_locks_card_binding(api, app, inbox):
    account = verified_user(api)
    answers = [bind(api, account, payment_password=WRONG_PIN) for _ in range(3)]

    assert [(a.status_code, a.json["code"]) for a in answers] == [
        (401, "invalid_credentials"), (401, "invalid_credentials"), (423, "payment_password_locked"),
    ]
    assert [a.json.get("attempts_left") for a in answers[:2]] == [2, 1]
    still = bind(api, account)  # the right password is refused while locked
    assert (still.status_code, still.json["code"]) == (423, "payment_password_locked")
    assert card_rows(app) == []
    assert len(inbox.messages(to=account["phone"], event="payment_locked")) == 1


def test_wrong_payment_password_on_card_binding_shares_the_lock_with_other_payments(api):
    account = verified_user(api)
    for _ in range(2):
        assert bind(api, account, payment_password=WRONG_PIN).status_code == 401
    verify = api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": WRONG_PIN},
                             headers=account["headers"])
    assert (verify.status_code, verify.json["code"]) == (423, "payment_password_locked")


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"card_number": break_luhn(make_card_number())}, "invalid_card_number", "card_number"),
        ({"card_number": make_card_number(length=16)[:15]}, "invalid_card_number", "card_number"),
        ({"card_number": make_card_number(length=19) + "0"}, "invalid_card_number", "card_number"),
        ({"card_number": "abcd" + make_card_number()[4:]}, "invalid_card_number", "card_number"),
        ({"card_number": "１" + make_card_number()[1:]}, "invalid_card_number", "card_number"),
        ({"bank_code": "HSBC"}, "unknown_bank", "bank_code"),
        ({"bank_code": "icbc"}, "unknown_bank", "bank_code"),
        ({"card_number": 4111111111111111}, "validation_failed", "card_number"),
        ({"payment_password": ""}, "validation_failed", "payment_password"),
        ({"is_default": True}, "validation_failed", "is_default"),
    ],
    ids=["luhn", "15 digits", "20 digits", "letters", "full-width digit", "unknown bank", "lower-case bank",
         "number as integer", "empty password", "extra field"],
)
def test_bad_card_input_is_refused_before_the_payment_password_is_checked(api, app, overrides, code, field):
    account = verified_user(api)
    body = {"card_number": make_card_number(), "holder_name": "张三", "bank_code": "ICBC",
            "payment_password": WRONG_PIN, **overrides}

    response = api.client.post(URL, json=body, headers=account["headers"])

    assert response.status_code == 422
    assert response.json["code"] == code
    assert [error["field"] for error in response.json["errors"]] == [field]
    assert str(overrides.get("card_number", "-")) not in response.get_data(as_text=True)
    # Input errors never counted toward the payment lock: three wrong passwords are still needed to lock.
    assert [bind(api, account, payment_password=WRONG_PIN).status_code for _ in range(3)] == [401, 401, 423]
    assert card_rows(app) == []


@pytest.mark.parametrize(
    ("holder_name", "ending"),
    [("李四", ""), ("张", ""), ("张三", "0000")],
    ids=["another name", "part of the name", "bank says another holder (ending 0000)"],
)
def test_holder_must_be_the_verified_real_name_and_the_bank_must_agree(api, app, holder_name, ending):
    account = verified_user(api, "张三")
    response = bind(api, account, make_card_number(ending=ending), holder_name=holder_name)
    assert response.status_code == 422
    assert response.json["code"] == "card_holder_mismatch"
    assert card_rows(app) == []


def test_latin_holder_names_match_regardless_of_case_and_spacing(api):
    account = verified_user(api, "John Doe")
    response = bind(api, account, holder_name=" JOHN  doe ")
    assert response.status_code == 201
    assert response.json["holder_name"] == "J*** D**"


@pytest.mark.parametrize(("real_name", "typed"), [
    ("John Doe", "Ｊｏｈｎ　Ｄｏｅ"),        # full-width letters and space, as a Chinese keyboard types them
    ("张三", "张 三"),                        # a space inside a Chinese name
    ("买买提·艾力", "买买提•艾力"),            # another interpunct in a transliterated name
    ("买买提·艾力", "买买提 ・ 艾力"),
], ids=["full-width latin", "space in a chinese name", "bullet interpunct", "katakana interpunct with spaces"])
def test_a_holder_name_typed_another_way_is_the_same_name(api, real_name, typed):
    """Found by an audit: each of these was refused as card_holder_mismatch."""
    account = verified_user(api, real_name)
    response = bind(api, account, holder_name=typed)
    assert response.status_code == 201, response.json


@pytest.mark.parametrize("typed", ["张四", "JohnDoe", "John Do"])
def test_another_name_is_still_another_name(api, typed):
    account = verified_user(api, "John Doe" if typed.startswith("J") else "张三")
    response = bind(api, account, holder_name=typed)
    assert (response.status_code, response.json["code"]) == (422, "card_holder_mismatch")


@pytest.mark.parametrize("bank_code", ["ICBC", "ABC", "CCB", "CMB", "SPDB"])
def test_every_partner_bank_can_be_bound(api, bank_code):
    assert bind(api, verified_user(api), bank_code=bank_code).status_code == 201


def test_the_same_card_cannot_be_bound_twice_but_can_be_bound_again_after_removal(api):
    account = verified_user(api)
    number = make_card_number()
    first = bind(api, account, number)
    assert first.status_code == 201

    again = bind(api, account, number, bank_code="ABC")
    assert (again.status_code, again.json["code"]) == (409, "card_already_bound")

    assert api.client.delete(f"{URL}/{first.json['id']}", headers=account["headers"]).status_code == 204
    rebound = bind(api, account, number)
    assert rebound.status_code == 201
    assert rebound.json["id"] != first.json["id"]


def test_removing_a_card_erases_its_token_and_alerts_by_sms(api, app, inbox):
    account = verified_user(api)
    number = make_card_number(length=18)
    card_id = bind(api, account, number, bank_code="CCB").json["id"]

    response = api.client.delete(f"{URL}/{card_id}", headers=account["headers"])

    assert response.status_code == 204
    assert api.client.get(URL, headers=account["headers"]).json == NO_CARDS
    [row] = card_rows(app)
    assert row["bank_token"] is None and row["removed_at"] is not None and row["last4"] == number[-4:]
    [alert] = inbox.messages(to=account["phone"], event="card_removed")
    assert "建设银行" in alert["body"] and f"**** {number[-4:]}" in alert["body"] and number not in alert["body"]
    again = api.client.delete(f"{URL}/{card_id}", headers=account["headers"])
    assert (again.status_code, again.json["code"]) == (404, "card_not_found")


def test_another_users_card_is_not_found_and_stays_bound(api, app, inbox):
    owner, intruder = verified_user(api), verified_user(api, "李四")
    card_id = bind(api, owner).json["id"]

    response = api.client.delete(f"{URL}/{card_id}", headers=intruder["headers"])

    assert (response.status_code, response.json["code"]) == (404, "card_not_found")
    unknown = api.client.delete(f"{URL}/card_doesnotexist", headers=intruder["headers"])
    assert {k: v for k, v in unknown.json.items() if k != "request_id"} == \
        {k: v for k, v in response.json.items() if k != "request_id"}
    assert api.client.get(URL, headers=intruder["headers"]).json == NO_CARDS
    assert [c["id"] for c in api.client.get(URL, headers=owner["headers"]).json["data"]] == [card_id]
    assert inbox.messages(event="card_removed") == []
    with app.app_context():
        assert cards.get_card_for_user(owner["user"]["id"], card_id).id == card_id
        with pytest.raises(NotFound):
            cards.get_card_for_user(intruder["user"]["id"], card_id)


def test_a_verified_seller_has_a_verified_identity_and_an_active_card(api, app):
    account = api.register()
    user_id = account["user"]["id"]

    def seller() -> bool:
        with app.app_context():
            return cards.is_verified_seller(user_id)

    assert seller() is False
    api.client.post("/api/v1/me/identity", json={"real_name": "张三", "id_number": make_id_number()},
                    headers=account["headers"])
    assert seller() is False
    card_id = bind(api, {**account, "real_name": "张三"}).json["id"]
    assert seller() is True
    api.client.delete(f"{URL}/{card_id}", headers=account["headers"])
    assert seller() is False


def test_a_bank_that_does_not_answer_is_a_503_and_binds_nothing(api, app, inbox):
    account = verified_user(api)
    app.extensions["bank_gateway"] = SimulatedBank(failure_rate=1.0, seed=7)

    response = bind(api, account)

    assert (response.status_code, response.json["code"]) == (503, "bank_unavailable")
    assert card_rows(app) == []
    assert inbox.messages(event="card_bound") == []


@pytest.mark.parametrize(("method", "path"), [("GET", URL), ("POST", URL), ("DELETE", f"{URL}/card_x")])
def test_cards_need_a_signed_in_user(api, method, path):
    response = api.client.open(path, method=method, json={})
    assert (response.status_code, response.json["code"]) == (401, "unauthenticated")


def test_card_endpoints_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {"get", "post"} <= set(paths[URL])
    assert "delete" in paths[URL + "/{card_id}"]


def test_one_card_is_bound_to_one_account_whoever_else_has_the_holders_name(api, app):
    """Found by an audit: two people of the same name, each verified with their own ID, could both bind one card,
    and the second then top up from the first one's bank account. A card has one holder, a holder one account."""
    holder, namesake = verified_user(api, "张三"), verified_user(api, "张三")
    number = make_card_number()
    first = bind(api, holder, number)
    assert first.status_code == 201
    second = bind(api, namesake, number)
    assert (second.status_code, second.json["code"]) == (409, "card_bound_to_another_account")
    assert len(card_rows(app)) == 1
    assert api.client.delete(f"{URL}/{first.json['id']}", headers=holder["headers"]).status_code == 204
    assert bind(api, namesake, number).status_code == 201  # unbound by its holder: free again


def test_concurrent_binds_of_one_card_to_two_accounts_bind_it_once(api, app):
    accounts = [verified_user(api, "张三") for _ in range(4)]
    number = make_card_number()
    barrier, answers = threading.Barrier(4), []

    def send(account) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(URL, headers=account["headers"], json={
            "card_number": number, "holder_name": "张三", "bank_code": "ICBC", "payment_password": PAYMENT_PASSWORD})
        answers.append((response.status_code, response.json["code"] if response.status_code != 201 else None))

    threads = [threading.Thread(target=send, args=(account,)) for account in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers, key=str) == [(201, None)] + [(409, "card_bound_to_another_account")] * 3
    assert len(card_rows(app)) == 1


def test_concurrent_binds_of_one_card_bind_it_once(api, app, inbox):
    account = verified_user(api)
    body = {"card_number": make_card_number(), "holder_name": "张三", "bank_code": "ICBC",
            "payment_password": PAYMENT_PASSWORD}
    barrier = threading.Barrier(5)
    answers: list = []

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(URL, json=body, headers=account["headers"])
        answers.append((response.status_code, response.json["code"] if response.status_code != 201 else None))

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers, key=str) == [(201, None)] + [(409, "card_already_bound")] * 4
    assert len(card_rows(app)) == 1
    assert len(inbox.messages(event="card_bound")) == 1
