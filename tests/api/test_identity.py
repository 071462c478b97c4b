"""Real-name verification (R7) over HTTP: GB 11643 validation, the sandbox provider of DESIGN 7.2, one ID
number per user, the SMS alert, and that the number itself is never stored or sent."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from app import create_app
from core.db import db
from core.ratelimit import limiter
from security.identity import mask_name
from tests.conftest import Api, Inbox, empty_all_tables
from tests.documented_errors import watch
from tests.factories_ids import make_id_number, with_check_digit, wrong_check_digit

URL = "/api/v1/me/identity"


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def verify(api, account, real_name="张三", id_number=None):
    body = {"real_name": real_name, "id_number": id_number or make_id_number()}
    return api.client.post(URL, json=body, headers=account["headers"])


def stored_identity_rows(app):
    with app.app_context():
        return [dict(row._mapping) for row in db.session.execute(text("SELECT * FROM identities"))]


def test_verifying_identity_answers_masked_data_and_sends_an_sms_without_the_number(api, app, inbox, clock):
    account = api.register()
    number = make_id_number()

    response = verify(api, account, "张三", number)

    assert response.status_code == 201, response.json
    assert response.json == {"verified": True, "real_name": "*三", "id_last4": number[-4:],
                             "verified_at": iso(clock.now())}
    assert api.client.get(URL, headers=account["headers"]).json == response.json
    [alert] = inbox.messages(to=account["phone"], event="identity_verified")
    assert "*三" in alert["body"] and number[-4:] in alert["body"]
    assert number not in alert["body"] and "张三" not in alert["body"]


def test_the_id_number_is_stored_only_as_a_keyed_hash_and_its_last_four(api, app):
    account = api.register()
    number = make_id_number()
    assert verify(api, account, "张三", number).status_code == 201

    [row] = stored_identity_rows(app)
    assert row["id_last4"] == number[-4:]
    assert len(row["id_number_hash"]) == 64
    assert all(number not in str(value) and number[:17] not in str(value) for value in row.values())


def test_latin_names_are_masked_word_by_word_and_the_sms_follows_the_locale(api, inbox):
    account = api.register(locale="en")
    response = verify(api, account, "  John   Doe ")
    assert response.status_code == 201
    assert response.json["real_name"] == "J*** D**"
    [alert] = inbox.messages(to=account["phone"], event="identity_verified")
    assert alert["body"].startswith("[EscrowWallet] Your account was verified as J*** D**")


def test_status_before_verification_is_not_verified(api):
    account = api.register()
    response = api.client.get(URL, headers=account["headers"])
    assert response.status_code == 200
    assert response.json == {"verified": False, "real_name": None, "id_last4": None, "verified_at": None}


def test_a_lower_case_x_check_digit_is_accepted_as_upper_case(api):
    number = next(n for n in (make_id_number() for _ in range(200)) if n.endswith("X"))
    response = verify(api, api.register(), "李四", number.lower())
    assert response.status_code == 201
    assert response.json["id_last4"] == number[-4:]


@pytest.mark.parametrize(
    ("make_number", "reason"),
    [
        (lambda: wrong_check_digit(make_id_number()), "check_digit"),
        (lambda: make_id_number(birth="19901332"), "birth_date"),  # month 13
        (lambda: make_id_number(birth="19900230"), "birth_date"),  # 30 February
        (lambda: make_id_number(birth="20270101"), "birth_date"),  # after today (the frozen clock says 2026)
        (lambda: make_id_number(birth="18991231"), "birth_date"),  # before 1900
        (lambda: make_id_number(region="000000"), "region"),
        # Yanshan district was merged away in 1986: nobody born after it was registered there. (A district made after
        # the birth year is possible: test_id_region_after_birth_audit3.)
        (lambda: make_id_number(region="110110", birth="19900101"), "region"),
        # A known province with a county python-stdnum does not know: its KeyError was a 500 (found by an audit).
        (lambda: make_id_number(region="119999"), "region"),
        (lambda: make_id_number(region="310199"), "region"),
        (lambda: make_id_number()[:17], "format"),
        (lambda: make_id_number() + "1", "format"),
        (lambda: "A" + make_id_number()[1:], "format"),
        (lambda: with_check_digit("11010119900307１２３"[:17]), "format"),  # full-width digits
    ],
    ids=["check digit", "month 13", "30 feb", "future", "before 1900", "unknown region",
         "region abolished before birth", "unknown county of a known province", "unknown county of a known city",
         "17 chars", "19 chars", "letter",
         "full-width digits"],
)
def test_invalid_id_numbers_are_refused_with_the_reason(api, inbox, make_number, reason):
    account = api.register()
    response = verify(api, account, "张三", make_number())
    assert response.status_code == 422
    assert response.json["code"] == "invalid_id_number"
    assert response.json["errors"] == [{"field": "id_number", "code": reason, "message": response.json["detail"]}]
    assert inbox.messages(event="identity_verified") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"real_name": "   ", "id_number": "x"}, "invalid_real_name"),
        ({"real_name": "张三3"}, "invalid_real_name"),
        ({"real_name": "<script>"}, "invalid_real_name"),
        ({"real_name": "张" * 65}, "validation_failed"),
        ({"real_name": ""}, "validation_failed"),
        ({"id_number": 110101190001010014}, "validation_failed"),
        ({"verified": True}, "validation_failed"),
    ],
    ids=["blank name", "digit in name", "markup", "name too long", "empty name", "number as integer", "extra field"],
)
def test_bad_request_bodies_are_422_problems(api, body, code):
    account = api.register()
    payload = {"real_name": "张三", "id_number": make_id_number(), **body}
    response = api.client.post(URL, json=payload, headers=account["headers"])
    assert response.status_code == 422
    assert response.json["code"] == code
    assert response.mimetype == "application/problem+json"


def test_sequence_code_999_is_a_name_mismatch_and_nothing_is_stored(api, app, inbox):
    account = api.register()
    response = verify(api, account, "张三", make_id_number(sequence="999"))
    assert response.status_code == 422
    assert response.json["code"] == "identity_mismatch"
    assert api.client.get(URL, headers=account["headers"]).json["verified"] is False
    assert stored_identity_rows(app) == []
    assert inbox.messages(event="identity_verified") == []


def test_one_id_number_belongs_to_one_user(api, inbox):
    number = make_id_number()
    first, second = api.register(), api.register()
    assert verify(api, first, "张三", number).status_code == 201

    response = verify(api, second, "张三", number)

    assert response.status_code == 409
    assert response.json["code"] == "id_number_taken"
    assert api.client.get(URL, headers=second["headers"]).json["verified"] is False
    assert inbox.messages(to=second["phone"], event="identity_verified") == []


def test_repeating_the_same_verification_is_an_idempotent_success(api, inbox, clock):
    account = api.register()
    number = make_id_number()
    first = verify(api, account, "张三", number)
    clock.advance(minutes=5)

    again = verify(api, account, " 张三 ", number)

    assert again.status_code == 200
    assert again.json == first.json
    assert len(inbox.messages(to=account["phone"], event="identity_verified")) == 1


@pytest.mark.parametrize("change", ["name", "number"])
def test_a_verified_account_cannot_switch_to_another_identity(api, change):
    account = api.register()
    number = make_id_number()
    assert verify(api, account, "张三", number).status_code == 201

    name, other_number = ("李四", number) if change == "name" else ("张三", make_id_number())
    other = verify(api, account, name, other_number)

    assert other.status_code == 409
    assert other.json["code"] == "already_verified"
    assert api.client.get(URL, headers=account["headers"]).json["real_name"] == "*三"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_identity_needs_a_signed_in_user(api, method):
    response = api.client.open(URL, method=method, json={"real_name": "张三", "id_number": make_id_number()})
    assert response.status_code == 401
    assert response.json["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("name", "masked"),
    [("张三", "*三"), ("欧阳娜娜", "***娜"), ("张", "*"), ("John Doe", "J*** D**"), ("买买提·艾力", "*****力")],
)
def test_mask_name(name, masked):
    assert mask_name(name) == masked


def test_identity_endpoints_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {"get", "post"} <= set(paths[URL])


def test_attempts_are_capped_per_account(database_url, clock, tmp_path):
    app = create_app({"DATABASE_URL": database_url, "WALLET_ENV": "test", "CLOCK": clock, "RATELIMIT_ENABLED": True,
                      "RATELIMIT_STORAGE_URI": "memory://", "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    watch(app)  # its 4xx problems must be documented (tests.documented_errors)
    with app.app_context():
        empty_all_tables()
        limiter.reset()
    api = Api(app.test_client(), Inbox(app))
    prober, bystander = api.register(), api.register()
    answers = [verify(api, prober, "张三", make_id_number(sequence="999")).status_code for _ in range(11)]
    assert answers == [422] * 10 + [429]
    assert verify(api, bystander, "张三").status_code == 201  # counted per account, not per client address
    with app.app_context():
        db.engine.dispose()


def _concurrently(app, requests):
    """Send each (headers, body) from its own thread, all released at once; the answers in order."""
    barrier = threading.Barrier(len(requests))
    answers: list = [None] * len(requests)

    def send(i, headers, body):
        client = app.test_client()
        barrier.wait()
        response = client.post(URL, json=body, headers=headers)
        answers[i] = (response.status_code, response.json.get("code"))

    threads = [threading.Thread(target=send, args=(i, *request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_concurrent_verifications_of_one_number_by_several_users_verify_exactly_one(api, app, inbox):
    body = {"real_name": "张三", "id_number": make_id_number()}
    accounts = [api.register() for _ in range(6)]

    answers = _concurrently(app, [(account["headers"], body) for account in accounts])

    assert sorted(answers) == [(201, None)] + [(409, "id_number_taken")] * 5
    assert len(stored_identity_rows(app)) == 1
    assert len(inbox.messages(event="identity_verified")) == 1


def test_concurrent_identical_verifications_by_one_user_store_and_alert_once(api, app, inbox):
    account = api.register()
    body = {"real_name": "张三", "id_number": make_id_number()}

    answers = _concurrently(app, [(account["headers"], body)] * 6)

    assert sorted(answers) == [(200, None)] * 5 + [(201, None)]
    assert len(stored_identity_rows(app)) == 1
    assert len(inbox.messages(event="identity_verified")) == 1
