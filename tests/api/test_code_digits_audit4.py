"""One-time codes typed with full-width digits: "１２３４５６" is what some Chinese input methods type for 123456, and
every field that takes a 6-digit SMS or authenticator code refused it 422 ``string_pattern_mismatch``, so the user
read "invalid input" for the right code. Any Unicode decimal digit now counts as its ASCII digit there (passwords
are left as they are)."""

import pyotp
import pytest

from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone

_FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def full_width(code: str) -> str:
    return code.translate(_FULL_WIDTH)


def test_registering_with_a_full_width_code_works(api):
    phone = make_phone()
    code = full_width(api.code(phone, "register"))
    assert not code.isascii()
    response = api.client.post("/api/v1/users", json={
        "phone": phone, "sms_code": code, "login_password": LOGIN_PASSWORD, "payment_password": PAYMENT_PASSWORD,
        "device_id": "phone-1"})
    assert response.status_code == 201, response.json


def test_a_new_device_signs_in_with_a_full_width_code_and_an_arabic_indic_one(api):
    account = api.register()
    code = full_width(api.code(account["phone"], "login"))
    assert api.login(account["phone"], device_id="tablet", sms_code=code).status_code == 201
    code = api.code(account["phone"], "login").translate(_ARABIC_INDIC)
    assert api.login(account["phone"], device_id="laptop", sms_code=code).status_code == 201


def test_password_recovery_and_phone_change_take_full_width_codes(api):
    account = api.register()
    reset = api.client.post("/api/v1/password-resets", json={
        "phone": account["phone"], "sms_code": full_width(api.code(account["phone"], "recover")),
        "new_password": "another long phrase"})
    assert reset.status_code == 204, reset.json

    other = api.register()
    new_phone = make_phone()
    moved = api.client.put("/api/v1/me/phone", headers=other["headers"], json={
        "new_phone": new_phone, "sms_code": full_width(api.code(new_phone, "change_phone")),
        "login_password": LOGIN_PASSWORD})
    assert moved.status_code == 204, moved.json


def test_an_authenticator_code_typed_full_width_enrols_and_signs_in(api, clock):
    account = api.register()
    enrol = api.client.post("/api/v1/me/totp", headers=account["headers"], json={"login_password": LOGIN_PASSWORD})
    assert enrol.status_code == 201, enrol.json
    totp = pyotp.TOTP(enrol.json["secret"])
    confirm = api.client.post("/api/v1/me/totp/verify", headers=account["headers"],
                              json={"code": full_width(totp.at(clock.now()))})
    assert confirm.status_code == 200, confirm.json
    clock.advance(seconds=30)
    assert api.login(account["phone"], device_id="b", totp_code=full_width(totp.at(clock.now()))).status_code == 201


@pytest.mark.parametrize("code", ["１２３４５", "１２３４５６７", "１２３ ４５６", "一二三四五六", "①②③④⑤⑥", "12345a"])
def test_what_is_not_six_digits_is_still_refused(api, code):
    response = api.client.post("/api/v1/users", json={
        "phone": make_phone(), "sms_code": code, "login_password": LOGIN_PASSWORD,
        "payment_password": PAYMENT_PASSWORD, "device_id": "phone-1"})
    assert response.status_code == 422, response.json
    assert [e["field"] for e in response.json["errors"]] == ["sms_code"]

