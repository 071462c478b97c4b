"""Sessions, devices and tokens (DESIGN 4.3)."""

import pyotp

from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD


def test_new_device_needs_an_sms_code_and_triggers_an_alert(api, inbox):
    account = api.register(device_id="old-phone")
    refused = api.login(account["phone"], device_id="new-phone")
    assert (refused.status_code, refused.json["code"]) == (401, "device_verification_required")

    code = api.code(account["phone"], "login")
    wrong = api.login(account["phone"], device_id="new-phone", sms_code=f"{(int(code) + 1) % 10**6:06d}")
    assert (wrong.status_code, wrong.json["code"]) == (401, "invalid_sms_code")
    ok = api.login(account["phone"], device_id="new-phone", sms_code=code)
    assert ok.status_code == 201
    assert len(inbox.messages(to=account["phone"], event="new_device_login")) == 1

    again = api.login(account["phone"], device_id="new-phone")  # trusted now
    assert again.status_code == 201


def test_sms_code_is_single_use(api):
    account = api.register(device_id="a")
    code = api.code(account["phone"], "login")
    assert api.login(account["phone"], device_id="b", sms_code=code).status_code == 201
    reused = api.login(account["phone"], device_id="c", sms_code=code)
    assert reused.json["code"] == "invalid_sms_code"


def test_sms_code_expires_after_ten_minutes(api, clock):
    account = api.register(device_id="a")
    code = api.code(account["phone"], "login")
    clock.advance(minutes=10)
    assert api.login(account["phone"], device_id="b", sms_code=code).json["code"] == "invalid_sms_code"


def test_sms_code_dies_after_five_wrong_tries(api):
    account = api.register(device_id="a")
    code = api.code(account["phone"], "login")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        assert api.login(account["phone"], device_id="b", sms_code=wrong).json["code"] == "invalid_sms_code"
    assert api.login(account["phone"], device_id="b", sms_code=code).json["code"] == "invalid_sms_code"


def test_sms_code_is_bound_to_its_purpose(api):
    account = api.register(device_id="a")
    code = api.code(account["phone"], "recover")
    assert api.login(account["phone"], device_id="b", sms_code=code).json["code"] == "invalid_sms_code"


def test_totp_can_replace_the_sms_code_once_per_step(api, clock):
    account = api.register(device_id="a")
    enrol = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": LOGIN_PASSWORD})
    assert enrol.status_code == 201
    totp = pyotp.TOTP(enrol.json["secret"])
    confirm = api.client.post("/api/v1/me/totp/verify", json={"code": totp.at(clock.now())}, headers=account["headers"])
    assert confirm.status_code == 200

    clock.advance(seconds=30)
    code = totp.at(clock.now())
    assert api.login(account["phone"], device_id="b", totp_code=code).status_code == 201
    replay = api.login(account["phone"], device_id="c", totp_code=code)
    assert (replay.status_code, replay.json["code"]) == (401, "invalid_totp_code")
    clock.advance(seconds=90)
    assert api.login(account["phone"], device_id="c", totp_code=totp.at(clock.now())).status_code == 201


def test_refresh_rotates_and_reuse_revokes_the_family(api):
    account = api.register()
    first = api.client.post("/api/v1/sessions/refresh",
                            json={"refresh_token": account["refresh_token"], "device_id": "phone-1"})
    assert first.status_code == 200
    new_access = api.bearer(first.json["access_token"])
    assert api.client.get("/api/v1/me", headers=new_access).status_code == 200

    reused = api.client.post("/api/v1/sessions/refresh",
                             json={"refresh_token": account["refresh_token"], "device_id": "phone-1"})
    assert (reused.status_code, reused.json["code"]) == (401, "refresh_token_reused")
    assert api.client.get("/api/v1/me", headers=new_access).status_code == 401
    newest = api.client.post("/api/v1/sessions/refresh",
                             json={"refresh_token": first.json["refresh_token"], "device_id": "phone-1"})
    assert newest.status_code == 401


def test_refresh_token_is_bound_to_its_device(api):
    account = api.register(device_id="phone-1")
    stolen = api.client.post("/api/v1/sessions/refresh",
                             json={"refresh_token": account["refresh_token"], "device_id": "attacker"})
    assert stolen.status_code == 401


def test_a_refresh_token_is_not_an_access_token(api):
    account = api.register()
    assert api.client.get("/api/v1/me", headers=api.bearer(account["refresh_token"])).status_code == 401
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 200


def test_access_token_expires(api, clock):
    account = api.register()
    clock.advance(minutes=15)
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401


def test_logout_ends_only_this_session(api):
    account = api.register()
    other = api.bearer(api.login(account["phone"]).json["access_token"])
    assert api.client.delete("/api/v1/sessions/current", headers=account["headers"]).status_code == 204
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401
    assert api.client.get("/api/v1/me", headers=other).status_code == 200


def test_password_change_revokes_every_other_session(api, inbox):
    account = api.register()
    other = api.bearer(api.login(account["phone"]).json["access_token"])
    change = api.client.put("/api/v1/me/login-password", headers=account["headers"],
                            json={"current_password": LOGIN_PASSWORD, "new_password": "brand new phrase"})
    assert change.status_code == 204
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 200
    assert api.client.get("/api/v1/me", headers=other).status_code == 401
    assert api.login(account["phone"], "brand new phrase").status_code == 201
    assert inbox.messages(to=account["phone"], event="login_password_changed")


def test_password_change_with_a_wrong_current_password_counts_toward_the_lock(api):
    """Counted as a wrong login would be; and the session it was entered in ends (a stolen token gets one guess)."""
    account = api.register()
    assert api.login(account["phone"], "not my password").status_code == 401  # one wrong already, from anywhere
    body = {"current_password": "not my password", "new_password": "brand new phrase"}
    second = api.client.put("/api/v1/me/login-password", headers=account["headers"], json=body)
    assert (second.status_code, second.json["attempts_left"]) == (401, 1)
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401
    assert api.login(account["phone"], "not my password").status_code == 423


def test_recovery_revokes_every_session(api):
    account = api.register()
    other = api.bearer(api.login(account["phone"]).json["access_token"])
    code = api.code(account["phone"], "recover")
    api.client.post("/api/v1/password-resets",
                    json={"phone": account["phone"], "sms_code": code, "new_password": "recovered phrase"})
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401
    assert api.client.get("/api/v1/me", headers=other).status_code == 401


def test_cookies_never_authenticate(api):
    account = api.register()
    api.client.set_cookie("session", account["access_token"])
    api.client.set_cookie("access_token", account["access_token"])
    response = api.client.get("/api/v1/me")
    assert (response.status_code, response.json["code"]) == (401, "unauthenticated")
    assert "Set-Cookie" not in api.client.get("/api/v1/me", headers=account["headers"]).headers


def test_devices_are_listed_and_revoking_one_ends_its_sessions(api):
    account = api.register(device_id="a")
    code = api.code(account["phone"], "login")
    second = api.login(account["phone"], device_id="b", sms_code=code).json
    devices = api.client.get("/api/v1/devices", headers=account["headers"]).json["data"]
    assert len(devices) == 2
    other = next(d for d in devices if not d["current"])
    assert api.client.delete(f"/api/v1/devices/{other['id']}", headers=account["headers"]).status_code == 204
    assert api.client.get("/api/v1/me", headers=api.bearer(second["access_token"])).status_code == 401
    assert api.login(account["phone"], device_id="b").json["code"] == "device_verification_required"


def test_another_users_device_cannot_be_revoked(api):
    alice, bob = api.register(), api.register()
    bobs_device = api.client.get("/api/v1/devices", headers=bob["headers"]).json["data"][0]["id"]
    response = api.client.delete(f"/api/v1/devices/{bobs_device}", headers=alice["headers"])
    assert (response.status_code, response.json["code"]) == (404, "not_found")
    assert api.client.get("/api/v1/me", headers=bob["headers"]).status_code == 200


def test_payment_password_change_by_current_password_or_by_sms(api, inbox):
    account = api.register()
    by_current = api.client.put("/api/v1/me/payment-password", headers=account["headers"],
                                json={"current_payment_password": PAYMENT_PASSWORD, "new_payment_password": "246813"})
    assert by_current.status_code == 204
    code = api.code(account["phone"], "recover")
    by_sms = api.client.put("/api/v1/me/payment-password", headers=account["headers"],
                            json={"sms_code": code, "new_payment_password": "975312"})
    assert by_sms.status_code == 204
    verify = api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": "975312"},
                             headers=account["headers"])
    assert verify.status_code == 200
    assert len(inbox.messages(to=account["phone"], event="payment_password_changed")) == 2


def test_sms_reset_of_the_payment_password_lifts_its_lock(api):
    account = api.register()
    for _ in range(3):
        api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": "000111"},
                        headers=account["headers"])
    code = api.code(account["phone"], "recover")
    api.client.put("/api/v1/me/payment-password", headers=account["headers"],
                   json={"sms_code": code, "new_payment_password": "975312"})
    verify = api.client.post("/api/v1/me/payment-password/verify", json={"payment_password": "975312"},
                             headers=account["headers"])
    assert verify.status_code == 200


def test_phone_change_moves_the_account_and_tells_both_numbers(api, inbox):
    from tests.factories import make_phone

    account = api.register(locale="en")
    new_phone = make_phone()
    code = api.code(new_phone, "change_phone")
    response = api.client.put("/api/v1/me/phone", headers=account["headers"],
                              json={"new_phone": new_phone, "sms_code": code, "login_password": LOGIN_PASSWORD})
    assert response.status_code == 204
    assert api.client.get("/api/v1/me", headers=account["headers"]).json["phone"] == new_phone
    old_alert = inbox.messages(to=account["phone"], event="phone_changed_old")
    assert len(old_alert) == 1 and new_phone not in old_alert[0]["body"]  # masked
    assert len(inbox.messages(to=new_phone, event="phone_changed_new")) == 1
    assert api.login(new_phone).status_code == 201


def test_email_change_needs_the_login_password_and_sends_an_alert(api, inbox):
    account = api.register(locale="en")
    missing = api.client.patch("/api/v1/me", headers=account["headers"], json={"email": "someone@example.com"})
    assert missing.status_code == 422
    wrong = api.client.patch("/api/v1/me", headers=account["headers"],
                             json={"email": "someone@example.com", "login_password": "wrong one!"})
    assert (wrong.status_code, wrong.json["code"]) == (401, "invalid_credentials")
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401  # that session ended
    account = api.relogin(account)
    ok = api.client.patch("/api/v1/me", headers=account["headers"],
                          json={"email": "someone@example.com", "login_password": LOGIN_PASSWORD})
    assert (ok.status_code, ok.json["email"]) == (200, "someone@example.com")
    alert = inbox.messages(to=account["phone"], event="email_changed")
    assert len(alert) == 1 and "s***@example.com" in alert[0]["body"]


def test_locale_change_needs_no_password(api):
    account = api.register()
    response = api.client.patch("/api/v1/me", headers=account["headers"], json={"locale": "en"})
    assert (response.status_code, response.json["locale"]) == (200, "en")
