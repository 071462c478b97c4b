"""Audit of two-factor codes, devices, tokens, one-time codes and rate limits (DESIGN 4.2, 4.3)."""

import uuid

import pyotp

from tests.api.test_rate_limits import limited_client  # noqa: F401 - the fixture
from tests.factories import LOGIN_PASSWORD, make_phone


def _enrol(api, account, clock, **body):
    enrol = api.client.post("/api/v1/me/totp", headers=account["headers"], json=body or None)
    assert enrol.status_code == 201, enrol.json
    totp = pyotp.TOTP(enrol.json["secret"])
    confirm = api.client.post("/api/v1/me/totp/verify", json={"code": totp.at(clock.now())},
                              headers=account["headers"])
    assert confirm.status_code == 200, confirm.json
    return totp


# --- TOTP ------------------------------------------------------------------------------------------------------


def test_a_stolen_access_token_alone_cannot_replace_the_authenticator(api, clock):
    account = api.register(device_id="a")
    owners = _enrol(api, account, clock, login_password=LOGIN_PASSWORD)

    thief = api.client.post("/api/v1/me/totp", headers=account["headers"], json={})
    assert (thief.status_code, thief.json["errors"][0]["field"]) == (422, "login_password")
    wrong = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": "not the one!"})
    assert (wrong.status_code, wrong.json["code"]) == (401, "invalid_credentials")

    clock.advance(seconds=30)  # the owner's authenticator still signs in a new device
    assert api.login(account["phone"], device_id="b", totp_code=owners.at(clock.now())).status_code == 201


def test_wrong_passwords_at_totp_enrolment_count_toward_the_login_lock(api):
    """Counted as a wrong login would be; and the session it was entered in ends (a stolen token gets one guess)."""
    account = api.register()
    wrong = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": "not the one!"})
    assert (wrong.status_code, wrong.json["attempts_left"]) == (401, 2)
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401
    assert [api.login(account["phone"], "not the one!").status_code for _ in range(2)] == [401, 423]


def test_enrolling_an_authenticator_tells_the_owner_by_sms(api, clock, inbox):
    account = api.register(device_id="a", locale="en")
    _enrol(api, account, clock, login_password=LOGIN_PASSWORD)
    assert len(inbox.messages(to=account["phone"], event="totp_enabled")) == 1


def test_replacing_an_authenticator_tells_the_owner_that_the_old_one_stopped_working(api, clock, inbox):
    account = api.register(device_id="a")
    _enrol(api, account, clock, login_password=LOGIN_PASSWORD)
    again = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": LOGIN_PASSWORD})
    assert again.status_code == 201
    assert len(inbox.messages(to=account["phone"], event="totp_disabled")) == 1


def test_three_wrong_authenticator_codes_lock_the_login_like_wrong_passwords(api, clock, inbox):
    """R3: an attacker who knows the password may not guess authenticator codes without bound (each right password
    cleared the window, so wrong codes were limited only by the hourly rate limit)."""
    account = api.register(device_id="a")
    totp = _enrol(api, account, clock, login_password=LOGIN_PASSWORD)
    clock.advance(seconds=30)
    good = totp.at(clock.now())
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    answers = [api.login(account["phone"], device_id="b", totp_code=wrong) for _ in range(3)]
    assert [(r.status_code, r.json["code"]) for r in answers] == [
        (401, "invalid_totp_code"), (401, "invalid_totp_code"), (423, "login_locked")]
    assert answers[1].json["attempts_left"] == 1
    locked = api.login(account["phone"], device_id="b", totp_code=good)
    assert (locked.status_code, locked.json["code"]) == (423, "login_locked")
    assert inbox.messages(to=account["phone"], event="login_locked")


def test_a_right_authenticator_code_clears_earlier_wrong_ones(api, clock):
    account = api.register(device_id="a")
    totp = _enrol(api, account, clock, login_password=LOGIN_PASSWORD)
    clock.advance(seconds=30)
    good = totp.at(clock.now())
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    for _ in range(2):
        assert api.login(account["phone"], device_id="b", totp_code=wrong).status_code == 401
    assert api.login(account["phone"], device_id="b", totp_code=good).status_code == 201
    clock.advance(seconds=30)
    wrong = f"{(int(totp.at(clock.now())) + 1) % 10**6:06d}"
    assert api.login(account["phone"], device_id="c", totp_code=wrong).json["attempts_left"] == 2


def test_an_enrolment_code_cannot_be_replayed_to_sign_in(api, clock):
    account = api.register(device_id="a")
    enrol = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": LOGIN_PASSWORD})
    code = pyotp.TOTP(enrol.json["secret"]).at(clock.now())
    assert api.client.post("/api/v1/me/totp/verify", json={"code": code}, headers=account["headers"]).status_code == 200
    replay = api.login(account["phone"], device_id="b", totp_code=code)
    assert (replay.status_code, replay.json["code"]) == (401, "invalid_totp_code")


# --- devices and tokens ----------------------------------------------------------------------------------------


def test_a_revoked_devices_refresh_token_mints_nothing(api):
    account = api.register(device_id="a")
    second = api.login(account["phone"], device_id="b", sms_code=api.code(account["phone"], "login")).json
    devices = api.client.get("/api/v1/devices", headers=account["headers"]).json["data"]
    other = next(d for d in devices if not d["current"])
    assert api.client.delete(f"/api/v1/devices/{other['id']}", headers=account["headers"]).status_code == 204
    refresh = api.client.post("/api/v1/sessions/refresh", json={"refresh_token": second["refresh_token"],
                                                                "device_id": "b"})
    assert refresh.status_code == 401


def test_a_logged_out_sessions_refresh_token_mints_nothing(api):
    account = api.register()
    assert api.client.delete("/api/v1/sessions/current", headers=account["headers"]).status_code == 204
    refresh = api.client.post("/api/v1/sessions/refresh", json={"refresh_token": account["refresh_token"],
                                                                "device_id": "phone-1"})
    assert refresh.status_code == 401


def test_after_a_password_change_the_other_sessions_refresh_tokens_are_dead(api):
    account = api.register()
    other = api.login(account["phone"]).json
    api.client.put("/api/v1/me/login-password", headers=account["headers"],
                   json={"current_password": LOGIN_PASSWORD, "new_password": "brand new phrase"})
    refresh = api.client.post("/api/v1/sessions/refresh", json={"refresh_token": other["refresh_token"],
                                                                "device_id": "phone-1"})
    assert refresh.status_code == 401


def test_device_list_never_shows_another_users_devices(api):
    alice, bob = api.register(device_id="alice-phone"), api.register(device_id="bob-phone")
    ids = {d["id"] for d in api.client.get("/api/v1/devices", headers=alice["headers"]).json["data"]}
    bobs = {d["id"] for d in api.client.get("/api/v1/devices", headers=bob["headers"]).json["data"]}
    assert len(ids) == 1 and not ids & bobs


# --- one-time codes and rate limits ----------------------------------------------------------------------------


def test_a_code_sent_to_one_number_does_not_work_for_another(api):
    alice, bob = api.register(device_id="a"), api.register(device_id="a")
    code = api.code(alice["phone"], "login")
    assert api.login(bob["phone"], device_id="b", sms_code=code).json["code"] == "invalid_sms_code"


def test_international_prefix_00_is_the_same_phone_for_the_limits(limited_client):  # noqa: F811
    phone = make_phone()
    assert limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"}).status_code == 202
    dialled = "00" + phone[1:2] + " " + phone[2:]
    again = limited_client.post("/api/v1/sms-codes", json={"phone": dialled, "purpose": "register"})
    assert again.status_code == 429


def test_x_forwarded_for_does_not_make_a_new_client_without_a_proxy(limited_client):  # noqa: F811
    statuses = [
        limited_client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"},
                            headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
        for n in range(4)
    ]
    assert statuses == [202, 202, 202, 429]


def test_a_429_says_when_to_come_back(limited_client):  # noqa: F811
    phone = make_phone()
    limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    refused = limited_client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
    assert refused.status_code == 429 and refused.json["code"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 60


def test_an_ipv6_client_is_its_64_network_not_each_of_its_addresses(limited_client):  # noqa: F811
    """One IPv6 subscriber gets a whole /64 and may take a new address for every request: counted per address, the
    per-client limits (code sends, logins across many numbers) stopped nobody."""
    network = "2001:db8:" + ":".join(uuid.uuid4().hex[i:i + 4] for i in (0, 4)) + ":"
    statuses = [
        limited_client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"},
                            environ_base={"REMOTE_ADDR": f"{network}{n}:0:0:{n}"}).status_code
        for n in range(1, 5)
    ]
    assert statuses == [202, 202, 202, 429]


def test_ipv4_clients_stay_apart(limited_client):  # noqa: F811
    base = f"198.51.100.{uuid.uuid4().int % 200}"
    for _ in range(3):
        limited_client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"},
                            environ_base={"REMOTE_ADDR": base})
    neighbour = base.rsplit(".", 1)[0] + f".{int(base.rsplit('.', 1)[1]) + 1}"
    other = limited_client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"},
                                environ_base={"REMOTE_ADDR": neighbour})
    assert other.status_code == 202
