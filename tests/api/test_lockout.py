"""DESIGN 4.2 over HTTP, with the clock moved by hand."""

import statistics
import time
from datetime import UTC, datetime, timedelta

from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.statements import statements_sent

WRONG = "definitely not it"


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def test_third_wrong_login_locks_for_exactly_three_hours(api, clock):
    phone = api.register()["phone"]
    first, second = api.login(phone, WRONG), api.login(phone, WRONG)
    assert (first.status_code, first.json["code"], first.json["attempts_left"]) == (401, "invalid_credentials", 2)
    assert (second.status_code, second.json["attempts_left"]) == (401, 1)

    third = api.login(phone, WRONG)
    assert third.status_code == 423
    assert third.json["code"] == "login_locked"
    assert third.json["locked_until"] == iso(clock.now() + timedelta(hours=3))

    clock.advance(hours=2, minutes=59, seconds=59)
    still = api.login(phone, LOGIN_PASSWORD)  # even the right password is refused while locked
    assert (still.status_code, still.json["code"]) == (423, "login_locked")

    clock.advance(seconds=1)
    assert api.login(phone, LOGIN_PASSWORD).status_code == 201


def test_failures_25_hours_apart_do_not_add_up(api, clock):
    phone = api.register()["phone"]
    for _ in range(4):
        response = api.login(phone, WRONG)
        assert response.status_code == 401
        clock.advance(hours=25)


def test_two_failures_then_success_then_two_failures_do_not_lock(api):
    phone = api.register()["phone"]
    assert [api.login(phone, WRONG).status_code for _ in range(2)] == [401, 401]
    assert api.login(phone, LOGIN_PASSWORD).status_code == 201
    assert [api.login(phone, WRONG).json["attempts_left"] for _ in range(2)] == [2, 1]


def test_unknown_number_answers_exactly_like_a_known_one_through_the_whole_sequence(api, clock):
    known = api.register()["phone"]
    unknown = make_phone()
    for step in range(4):
        a, b = api.login(known, WRONG), api.login(unknown, WRONG)
        assert a.status_code == b.status_code, step
        strip = lambda body: {k: v for k, v in body.items() if k != "request_id"}  # noqa: E731
        assert strip(a.json) == strip(b.json), step
    clock.advance(hours=3)
    a, b = api.login(known, WRONG), api.login(unknown, WRONG)
    assert (a.status_code, a.json["attempts_left"]) == (b.status_code, b.json["attempts_left"]) == (401, 2)


def test_unknown_and_known_numbers_take_the_same_time(api):
    """Timed in CPU time of this thread, where the test client runs the whole request (and, on SQLite, the database):
    wall-clock time on a loaded machine measured the neighbours as much as the login (with two or three busy processes
    on two cores, the medians came out up to 25 % apart, where this thread's CPU time stayed within 5 %).
    What the database does meanwhile is pinned by the next test."""

    def timed(phone):
        started = time.thread_time()
        response = api.login(phone, WRONG)
        elapsed = time.thread_time() - started
        assert response.status_code == 401
        return elapsed

    known_times, unknown_times = [], []
    for _ in range(12):  # fresh numbers, two tries each: every sample takes the "wrong, not locked" path
        known, unknown = api.register()["phone"], make_phone()
        for _ in range(2):
            known_times.append(timed(known))
            unknown_times.append(timed(unknown))
    k, u = statistics.median(known_times), statistics.median(unknown_times)
    assert abs(k - u) / max(k, u) < 0.20, (k, u)


def test_unknown_and_known_numbers_do_the_same_work(api, app, monkeypatch):
    """The same statements, and one argon2 verification at the same cost: nothing for a clock to tell apart, however
    busy the machine."""
    hasher = app.extensions["passwords"]
    real_verify, costs = hasher.verify, []

    def verify(stored, secret):
        costs.append(stored.rsplit("$", 2)[0])  # "$argon2id$v=19$m=…,t=…,p=…": what sets the work
        return real_verify(stored, secret)

    monkeypatch.setattr(hasher, "verify", verify)
    known, unknown = api.register()["phone"], make_phone()
    work = {}
    for phone in (known, unknown):
        costs.clear()
        with statements_sent(app) as sent:
            assert api.login(phone, WRONG).status_code == 401
        work[phone] = (list(costs), sent)
    assert len(work[known][0]) == 1 and work[known][1]
    assert work[known] == work[unknown]


def test_payment_lock_leaves_login_working(api, clock):
    account = api.register()
    verify = lambda pw: api.client.post(  # noqa: E731
        "/api/v1/me/payment-password/verify", json={"payment_password": pw}, headers=account["headers"]
    )
    # DESIGN 4.2: "A wrong password answers 401 `invalid_credentials` with the attempts left", the payment password
    # too (it answered a code of its own, which was also a malformed one's validation code; design audit).
    assert [(r.status_code, r.json["code"], r.json["attempts_left"]) for r in (verify("000111"), verify("000111"))] \
        == [(401, "invalid_credentials", 2), (401, "invalid_credentials", 1)]
    locked = verify("000111")
    assert (locked.status_code, locked.json["code"]) == (423, "payment_password_locked")
    assert locked.json["locked_until"] == iso(clock.now() + timedelta(hours=3))
    assert verify(PAYMENT_PASSWORD).status_code == 423

    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 200
    assert api.login(account["phone"], LOGIN_PASSWORD).status_code == 201

    clock.advance(hours=3)
    fresh = api.bearer(api.login(account["phone"], LOGIN_PASSWORD).json["access_token"])
    reopened = api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": PAYMENT_PASSWORD},
                               headers=fresh)
    assert reopened.status_code == 200


def test_a_login_lock_stops_logins_not_the_sessions_the_owner_holds(api):
    """Anyone who knows a number can lock its login (R3: the guesser). Found by an audit: the lock refused the owner's
    existing tokens and refresh tokens too, so a buyer could keep a seller out of the app, every three hours again,
    until the seller's silence agreed to a refund. The lock is on the password: logging in with it waits; the owner's
    sessions go on."""
    account = api.register()
    for _ in range(3):
        api.login(account["phone"], WRONG)
    right = api.login(account["phone"], LOGIN_PASSWORD)
    assert (right.status_code, right.json["code"]) == (423, "login_locked")
    for method, path in [("get", "/api/v1/me"), ("get", "/api/v1/devices")]:
        assert getattr(api.client, method)(path, headers=account["headers"]).status_code == 200
    response = api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": PAYMENT_PASSWORD},
                               headers=account["headers"])
    assert response.status_code == 200, response.json  # the payment password has a lock of its own
    refreshed = api.client.post("/api/v1/sessions/refresh",
                                json={"refresh_token": account["refresh_token"], "device_id": "phone-1"})
    assert refreshed.status_code == 200, refreshed.json
    assert api.client.get("/api/v1/me", headers=api.bearer(refreshed.json["access_token"])).status_code == 200


def test_ten_consecutive_failures_hard_lock_until_an_sms_reset(api, clock):
    phone = api.register()["phone"]
    statuses = []
    for _ in range(10):
        statuses.append(api.login(phone, WRONG).status_code)
        clock.advance(hours=25)
    assert statuses[-1] == 423
    clock.advance(days=30)
    locked = api.login(phone, LOGIN_PASSWORD)
    assert (locked.status_code, locked.json["hard_locked"]) == (423, True)

    code = api.code(phone, "recover")
    reset = api.client.post("/api/v1/password-resets",
                            json={"phone": phone, "sms_code": code, "new_password": "a new long secret"})
    assert reset.status_code == 204
    assert api.login(phone, "a new long secret", sms_code=api.code(phone, "login")).status_code == 201


def test_an_sms_reset_lifts_an_ordinary_lock(api):
    phone = api.register()["phone"]
    for _ in range(3):
        api.login(phone, WRONG)
    code = api.code(phone, "recover")
    api.client.post("/api/v1/password-resets",
                    json={"phone": phone, "sms_code": code, "new_password": "fresh secret 2"})
    assert api.login(phone, "fresh secret 2", sms_code=api.code(phone, "login")).status_code == 201


def test_login_lock_sends_the_owner_one_sms(api, inbox, clock):
    account = api.register(locale="en")
    clock.set(datetime(2026, 3, 2, 7, 59, 20, tzinfo=UTC))  # 15:59:20 in China: the lock ends at 18:59:20
    for _ in range(3):
        api.login(account["phone"], WRONG)
    locks = inbox.messages(to=account["phone"], event="login_locked")
    assert len(locks) == 1
    assert WRONG not in locks[0]["body"]
    # The minute the lock has ended by (time audit: it read 18:59, when a try still found it locked).
    assert "sign-in is locked until 2026-03-02 19:00 (UTC+8)" in locks[0]["body"], locks[0]["body"]


def test_payment_lock_sends_the_owner_an_sms(api, inbox):
    account = api.register(locale="en")
    for _ in range(3):
        api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": "000111"},
                        headers=account["headers"])
    locks = inbox.messages(to=account["phone"], event="payment_locked")
    assert len(locks) == 1
    assert "payments are locked until" in locks[0]["body"]
    assert "000111" not in locks[0]["body"] and PAYMENT_PASSWORD not in locks[0]["body"]


def test_a_right_password_still_waiting_for_a_device_code_leaves_earlier_failures_standing(api):
    """Only a finished login clears the window: a right password from a new device, code not yet given, does not."""
    account = api.register(device_id="old-phone")
    phone = account["phone"]
    for _ in range(2):
        assert api.login(phone, WRONG, device_id="old-phone").status_code == 401
    waiting = api.login(phone, device_id="new-phone")
    assert (waiting.status_code, waiting.json["code"]) == (401, "device_verification_required")
    third = api.login(phone, WRONG, device_id="old-phone")
    assert (third.status_code, third.json["code"]) == (423, "login_locked")
