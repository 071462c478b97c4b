"""A 423 whose lock lifts by itself says when, as ``Retry-After`` (seconds until ``locked_until``, rounded up), for the
login, the payment password and the recovery alike; a hard lock, which only a reset by SMS code lifts, has none. Found
by the twenty-eighth session's review: a client saw only the body's ``locked_until``, and a generic HTTP client or proxy
that honours ``Retry-After`` had nothing to go by. The document says so under each operation's 423."""

from tests.api.test_recovery_audit import locked_recovery
from tests.factories import LOGIN_PASSWORD

WRONG = "definitely not it"


def test_a_login_lock_says_when_it_lifts_and_counts_down(api, clock):
    phone = api.register()["phone"]
    locked = [api.login(phone, WRONG) for _ in range(3)][-1]
    assert (locked.status_code, locked.json["hard_locked"]) == (423, False)
    assert locked.headers["Retry-After"] == str(3 * 3600)
    clock.advance(seconds=3 * 3600 - 90.5)
    again = api.login(phone, LOGIN_PASSWORD)
    assert (again.status_code, again.headers["Retry-After"]) == (423, "91")  # rounded up: never too early
    clock.advance(seconds=91)
    assert api.login(phone, LOGIN_PASSWORD).status_code == 201


def test_a_hard_lock_has_no_retry_after(api, clock):
    phone = api.register()["phone"]
    for _ in range(3):
        for _ in range(3):
            api.login(phone, WRONG)
        clock.advance(hours=3)
    tenth = api.login(phone, WRONG)
    assert (tenth.status_code, tenth.json["hard_locked"]) == (423, True)
    assert "Retry-After" not in tenth.headers


def test_a_payment_password_lock_says_when_it_lifts(api):
    alice, bob = api.verified(), api.register()
    answers = [api.client.post("/api/v1/transfers", headers={**alice["headers"], "Idempotency-Key": f"k{n}"},
                               json={"to_phone": bob["phone"], "amount": 1, "payment_password": "000000"})
               for n in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 423]
    assert answers[-1].headers["Retry-After"] == str(3 * 3600)
    assert "Retry-After" not in answers[0].headers


def test_a_recovery_lock_says_when_it_lifts(api, app, clock, inbox):
    owner, _totp, _before, _locked_until = locked_recovery(api, app, clock, inbox)
    clock.advance(minutes=1)
    again = api.client.post("/api/v1/password-resets", json={
        "phone": owner["phone"], "sms_code": api.code(owner["phone"], "recover"), "new_password": "a brand new one 42",
        "totp_code": "000000"})
    assert (again.status_code, again.json["code"]) == (423, "recovery_locked")
    assert again.headers["Retry-After"] == str(3 * 3600 - 60)


def test_the_document_names_the_header_under_423(client):
    document = client.get("/api/v1/openapi.json").json
    login_423 = document["paths"]["/api/v1/sessions"]["post"]["responses"]["423"]
    assert login_423["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
