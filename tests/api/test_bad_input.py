"""Acceptance 5 of the foundation: bad input is a 4xx problem+json with a code, never a 500."""

import pytest

from tests.factories import LOGIN_PASSWORD, make_phone

REGISTER = "/api/v1/users"


def valid_registration(phone=None):
    return {"phone": phone or make_phone(), "sms_code": "123456", "login_password": "long enough phrase",
            "payment_password": "135790", "device_id": "d1"}


def assert_problem(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def test_malformed_json(client):
    response = client.post(REGISTER, data=b"{not json", content_type="application/json")
    assert_problem(response, 400, "malformed_request")


@pytest.mark.parametrize("payload", [b"[]", b"null", b"42", b'"text"', b'{"phone": NaN}', b"\xff\xfe"])
def test_bodies_that_are_not_a_json_object(client, payload):
    response = client.post(REGISTER, data=payload, content_type="application/json")
    assert_problem(response, 400, "malformed_request")


def test_wrong_content_type(client):
    response = client.post(REGISTER, data="phone=1", content_type="application/x-www-form-urlencoded")
    assert_problem(response, 415, "unsupported_media_type")


def test_oversized_body(client):
    response = client.post(REGISTER, data=b'{"phone": "' + b"1" * 1_000_000 + b'"}', content_type="application/json")
    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("field", "value", "error_code"),
    [
        ("phone", 8613800138000, "string_type"),
        ("sms_code", 123456, "string_type"),
        ("sms_code", "12345", "string_pattern_mismatch"),
        ("payment_password", None, "string_type"),
        ("device_id", "", "string_too_short"),
        ("locale", "fr", "literal_error"),
        ("is_staff", True, "extra_forbidden"),
        ("email", "not-an-email", "string_pattern_mismatch"),
    ],
)
def test_field_errors_name_the_field(client, field, value, error_code):
    body = valid_registration()
    body[field] = value
    problem = assert_problem(client.post(REGISTER, json=body), 422, "validation_failed")
    assert {"field": field, "code": error_code} == {k: problem["errors"][0][k] for k in ("field", "code")}


def test_missing_fields_are_all_listed(client):
    problem = assert_problem(client.post(REGISTER, json={}), 422, "validation_failed")
    assert {e["field"] for e in problem["errors"]} == {"phone", "sms_code", "login_password", "payment_password",
                                                        "device_id"}


@pytest.mark.parametrize("phone", ["12345", "+1 202 555 01", "not a phone", "+999123456789", "+8610"])
def test_invalid_phone_numbers(client, phone):
    problem = assert_problem(client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"}),
                             422, "validation_failed")
    assert problem["errors"][0]["code"] == "invalid_phone"


@pytest.mark.parametrize(
    ("login_password", "payment_password", "field", "code"),
    [
        ("short", "135790", "login_password", "weak_password"),
        ("password123", "135790", "login_password", "weak_password"),
        ("aaaaaaaaaaaa", "135790", "login_password", "weak_password"),
        ("long enough phrase", "123456", "payment_password", "weak_payment_password"),
        ("long enough phrase", "000000", "payment_password", "weak_payment_password"),
        ("long enough phrase", "121212", "payment_password", "weak_payment_password"),
        ("long enough phrase", "654321", "payment_password", "weak_payment_password"),
        ("long enough phrase", "12345a", "payment_password", "invalid_payment_password"),
        ("long enough phrase", "1357901", "payment_password", "invalid_payment_password"),
    ],
)
def test_weak_passwords_are_refused_before_the_code_is_spent(api, login_password, payment_password, field, code):
    phone = make_phone()
    sms_code = api.code(phone, "register")
    body = {**valid_registration(phone), "sms_code": sms_code, "login_password": login_password,
            "payment_password": payment_password}
    problem = assert_problem(api.client.post(REGISTER, json=body), 422, "validation_failed")
    assert (problem["errors"][0]["field"], problem["errors"][0]["code"]) == (field, code)
    fixed = {**body, "login_password": "long enough phrase", "payment_password": "135790"}
    assert api.client.post(REGISTER, json=fixed).status_code == 201


def test_registering_a_taken_number(api):
    phone = api.register()["phone"]
    api.client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    # A registered number gets a notice instead of a code, so any code is wrong; the answer reveals nothing new.
    response = api.client.post(REGISTER, json={**valid_registration(phone)})
    assert_problem(response, 401, "invalid_sms_code")


def test_sms_code_requests_always_answer_202(api, inbox):
    known = api.register()["phone"]
    unknown = make_phone()
    for phone in (known, unknown):
        for purpose in ("register", "login", "recover", "change_phone"):
            response = api.client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": purpose})
            assert response.status_code == 202 and response.json == {"accepted": True, "expires_in": 600}
    assert [m["event"] for m in inbox.messages(to=unknown)] == ["sms_code", "sms_code"]  # register, change_phone


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic abc", "Bearer not-a-token", "Bearer " + "x" * 500])
def test_missing_and_forged_tokens(client, header):
    assert_problem(client.get("/api/v1/me", headers={"Authorization": header}), 401, "unauthenticated")


def test_unknown_route_and_wrong_method(client):
    assert_problem(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_problem(client.get("/api/v1/users"), 405, "method_not_allowed")


def test_security_headers(client):
    response = client.get("/healthz")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    api_response = client.get("/api/v1/me")
    assert api_response.headers["Cache-Control"] == "no-store"
    assert api_response.headers["X-Request-ID"]


def test_readiness_checks_the_database(client):
    assert client.get("/readyz").json == {"status": "ready"}


def test_a_wrong_method_names_the_allowed_ones(client):
    response = client.delete("/api/v1/users")
    assert response.status_code == 405 and response.headers["Allow"] and "POST" in response.headers["Allow"]


def test_a_path_parameter_longer_than_documented_names_nothing(api):
    account = api.register()
    for path in ("/api/v1/users/" + "0" * 65 + "/reputation", "/api/v1/trades/" + "t" * 65):
        response = api.client.get(path, headers=account["headers"])
        assert (response.status_code, response.json["code"]) == (404, "not_found")
    long_trade = "/api/v1/trades/" + "t" * 65 + "/refunds/r/agree"
    response = api.client.post(long_trade, headers=account["headers"], json={"payment_password": "000111"})
    assert response.status_code == 404  # before the payment password is even looked at
    verify = api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": "000111"},
                             headers=account["headers"])
    assert verify.json["attempts_left"] == 2  # the long path cost no password try


@pytest.mark.parametrize("value", ["0", "20260101", "2026-1-1", "yesterday", "1700000000"])
def test_statement_dates_must_be_calendar_dates(api, value):
    account = api.register()
    response = api.client.get(f"/api/v1/wallet/transactions?to={value}", headers=account["headers"])
    assert (response.status_code, response.json["code"]) == (422, "validation_failed")


@pytest.mark.parametrize(("query", "status"), [("to=9999-12-31", 422), ("from=0001-01-01", 422),
                                               ("from=1899-12-31", 422), ("to=9999-12-30", 200),
                                               ("from=1900-01-01", 200), ("from=1900-01-01&to=9999-12-30", 200)])
def test_statement_dates_at_the_ends_of_the_calendar(api, query, status):
    """Found by an audit: the day after 9999-12-31, and midnight in China on 0001-01-01 in UTC, do not exist; both
    answered 500 (also halfway through a CSV download)."""
    account = api.verified()
    api.money("/api/v1/topups", account, amount=1000, bank_card_id=account["card_id"])
    for fmt in ("json", "csv"):
        response = api.client.get(f"/api/v1/wallet/transactions?{query}&format={fmt}", headers=account["headers"])
        assert response.status_code == status, response.data
        if status == 422:
            assert response.json["code"] == "validation_failed"


def test_a_nul_character_in_a_query_cursor_is_a_validation_error(api):
    """Found by schemathesis on PostgreSQL (GET /trades?starting_after=...%00): PostgreSQL cannot hold NUL in
    text, and the query used to reach it and fail with a 500."""
    account = api.register()
    response = api.client.get("/api/v1/trades?starting_after=%C2%A4%00&limit=5", headers=account["headers"])
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"] == [{"field": "starting_after", "code": "nul_character",
                               "message": "Text may not contain the NUL character."}]


def test_a_nul_character_anywhere_in_a_body_is_a_validation_error(api):
    account = api.register()
    response = api.client.post("/api/v1/trades", headers=account["headers"],
                               json={"seller_phone": make_phone(), "title": "bike\u0000", "amount": 100})
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"][0]["field"] == "title"
    nested = api.client.post(REGISTER, json={**valid_registration(), "extra": ["ok", {"deep\u0000": 1}]})
    assert_problem(nested, 422, "validation_failed")


def test_a_nul_character_in_a_path_id_names_nothing(api):
    account = api.register()
    response = api.client.get("/api/v1/trades/trd_1%00", headers=account["headers"])
    assert_problem(response, 404, "not_found")


def _nested_body(depth: int, **fields: str) -> str:
    head = ", ".join(f'"{name}": "{value}"' for name, value in fields.items())
    return "{" + head + ', "extra": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [5000, 16])
@pytest.mark.parametrize(("path", "fields"), [
    ("/api/v1/sessions", {"login_password": "correct horse battery", "device_id": "phone-1"}),
    ("/api/v1/sms-codes", {"purpose": "login"}),
    ("/api/v1/password-resets", {"sms_code": "123456", "new_password": "a new long secret"}),
])
def test_a_body_nested_too_deeply_is_a_malformed_request(api, path, fields, depth):
    """Found by an audit: 5,000 brackets (10 kB) made the JSON parser give up with a RecursionError, a 500. Now
    no body may nest deeper than 16 levels; none of ours needs more than 4."""
    raw = _nested_body(depth, phone=make_phone(), **fields)
    response = api.client.post(path, data=raw, content_type="application/json")
    assert_problem(response, 400, "malformed_request")


def test_a_body_nested_within_the_limit_is_read(api):
    raw = _nested_body(14, phone=make_phone(), purpose="login")  # body > extra > 14 lists: 15 levels below it
    response = api.client.post("/api/v1/sms-codes", data=raw, content_type="application/json")
    assert_problem(response, 422, "validation_failed")  # read, then refused for the unknown field


def test_validation_errors_never_echo_a_secret(api):
    """pydantic's errors carry the ``input``; a 422 leaves it out, so a malformed request with a password, a code or a
    card number in it does not come back (nor into a log)."""
    account = api.register()
    secret_password, secret_card = "my secret 123 password" * 10, "6222020200112233445" * 3
    answers = [
        api.client.post("/api/v1/sessions", json={"phone": "+12025550100", "login_password": secret_password,
                                                  "device_id": "d", "sms_code": "12345x"}),
        api.client.post("/api/v1/users", json={"phone": "+12025550100", "sms_code": "999999x",
                                               "login_password": secret_password, "payment_password": 1357900,
                                               "device_id": "d"}),
        api.client.post("/api/v1/me/bank-cards", headers=account["headers"], json={
            "card_number": secret_card, "holder_name": "x", "bank_code": "ICBC", "payment_password": "13579x" * 5}),
        api.client.put("/api/v1/me/login-password", headers=account["headers"],
                       json={"current_password": LOGIN_PASSWORD, "new_password": secret_password}),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.json
        text = answer.get_data(as_text=True)
        for secret in (secret_password, secret_card, "999999x", "12345x", "1357900", "13579x"):
            assert secret not in text, (secret, text)
