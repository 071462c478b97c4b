"""Audit (input normalisation and internationalisation): what users type on Chinese and other keyboards, as the
HTTP API takes it and as the SMS texts other people read show it."""

from __future__ import annotations

import re
import unicodedata

import pytest

from notifications.templates import mask_email, render
from tests.factories import LOGIN_PASSWORD, make_phone

# A phone number however it is written: seven digits or more, apart or not.
_ANY_NUMBER = re.compile(r"\d(?:[\W_]*\d){6,}")
# Letters that fonts draw as nothing at all: Hangul fillers (U+3164 and its half-width form become U+1160 under NFKC).
_BLANK_LETTERS = "\u115f\u1160\u3164\uffa0"


def _as_read(text: str) -> str:
    """What a reader sees: compatibility forms as the characters they stand for, blank letters as the gap they are."""
    return re.sub(f"[{_BLANK_LETTERS}]", " ", unicodedata.normalize("NFKC", text))


def _new_device_alert(api, inbox, device_name: str, locale: str) -> str:
    owner = api.register(locale=locale)
    code = api.code(owner["phone"], "login")
    response = api.login(owner["phone"], device_id="second-phone", sms_code=code, device_name=device_name)
    assert response.status_code == 201, response.json
    return inbox.messages(to=owner["phone"], event="new_device_login")[-1]["body"]


@pytest.mark.parametrize("filler", list(_BLANK_LETTERS))
def test_a_device_name_cannot_show_a_number_spaced_with_blank_letters(api, inbox, filler):
    """Found by this audit: a Hangul filler is a letter (so neither dropped as a mark nor seen as a gap between
    digits) that renders as blank space; "客服 138ㅤ0013ㅤ8000" reached the owner's "Not you?" alert as a number to
    call."""
    body = _new_device_alert(api, inbox, f"客服 138{filler}0013{filler}8000", "zh")
    device = body.split("“", 1)[1].split("”", 1)[0]
    assert not _ANY_NUMBER.search(_as_read(device)), body


@pytest.mark.parametrize("filler", list(_BLANK_LETTERS))
def test_an_email_domain_cannot_show_a_number_spaced_with_blank_letters(api, inbox, filler):
    owner = api.register(locale="en")
    email = f"a@call{filler}400{filler}800{filler}1234.example"
    response = api.client.patch("/api/v1/me", headers=owner["headers"],
                                json={"email": email, "login_password": LOGIN_PASSWORD})
    assert response.status_code == 200, response.json
    body = inbox.messages(to=owner["phone"], event="email_changed")[-1]["body"]
    shown = body.split("changed to ", 1)[1].split(" at ", 1)[0]
    assert not _ANY_NUMBER.search(_as_read(shown)), body
    assert not _ANY_NUMBER.search(_as_read(mask_email(email)))
    assert "****1234" in render("email_changed", "en", {"email": mask_email(email), "time": "t"})


# How Chinese writes the digits of a phone number in words: ordinary and financial numerals, 〇, and 幺 (么) for one.
_CHINESE_DIGITS = str.maketrans("〇零一二三四五六七八九壹贰貳叁參肆伍陆陸柒捌玖幺么", "00123456789122334566789" "11")


@pytest.mark.parametrize("device", ["客服电话 一三八零零一三八零零零", "客服 壹叁捌-零零壹叁-捌零零零",
                                    "热线 四〇〇 八〇〇 幺二三四", "客服 138零零一三8000"])
def test_a_device_name_cannot_show_a_number_written_in_chinese_numerals(api, inbox, device):
    """Found by this audit: a number spelled in Chinese numerals, as Chinese readers read phone numbers aloud and
    as spam writes them to pass filters, reached the owner's "Not you?" alert whole ("客服电话 一三八零零一三八零零零":
    call "customer service" on 13800138000)."""
    body = _new_device_alert(api, inbox, device, "zh")
    shown = body.split("“", 1)[1].split("”", 1)[0]
    assert not _ANY_NUMBER.search(_as_read(shown).translate(_CHINESE_DIGITS)), body


@pytest.mark.parametrize("device", ["一加 Ace 3", "三星 Galaxy S24", "张三的小米十四", "OPPO Find X7"])
def test_a_device_name_with_a_few_chinese_numerals_is_shown_as_typed(device):
    assert f"“{device}”" in render("new_device_login", "zh", {"device": device, "time": "t"})


def _full_width(digits: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) for ch in digits)


def test_a_payment_password_typed_in_full_width_digits_can_be_set(api):
    """README: "Passwords are hashed and judged in Unicode NFKC, so ... full-width digits, is the same password." A
    full-width payment password was already accepted when paying, but setting one (registration, change) answered
    422 "The payment password is six digits." to someone who had typed six digits on a Chinese keyboard."""
    phone = make_phone()
    response = api.client.post("/api/v1/users", json={
        "phone": phone, "sms_code": api.code(phone, "register"), "login_password": LOGIN_PASSWORD,
        "payment_password": _full_width("135790"), "device_id": "phone-1"})
    assert response.status_code == 201, response.json
    headers = api.bearer(response.json["access_token"])
    verify = api.client.post("/api/v1/me/payment-password/verify", headers=headers, json={"payment_password": "135790"})
    assert verify.status_code == 200, verify.json

    change = api.client.put("/api/v1/me/payment-password", headers=headers, json={
        "current_payment_password": "135790", "new_payment_password": _full_width("480351")})
    assert change.status_code in (200, 204), change.json
    verify = api.client.post("/api/v1/me/payment-password/verify", headers=headers, json={"payment_password": "480351"})
    assert verify.status_code == 200, verify.json


@pytest.mark.parametrize("pin", ["123456", "111111", "121212"])
def test_a_trivial_payment_password_is_trivial_in_full_width_digits_too(api, pin):
    phone = make_phone()
    response = api.client.post("/api/v1/users", json={
        "phone": phone, "sms_code": api.code(phone, "register"), "login_password": LOGIN_PASSWORD,
        "payment_password": _full_width(pin), "device_id": "phone-1"})
    assert response.status_code == 422
    assert response.json["errors"][0]["code"] == "weak_payment_password", response.json


@pytest.mark.parametrize("first", ["\u202e", "\u2067", "\u200f", "\u061c", "\u200b", "\u0301"])
def test_an_email_address_cannot_put_a_bidi_or_invisible_control_in_the_alert(api, inbox, first):
    """Found by this audit: the alert shows the first character of the address's local part, whatever it is. With
    U+202E (RIGHT-TO-LEFT OVERRIDE) there, everything after it in the owner's "email changed" alert, its "Not you?
    Change your password now" included, is drawn reversed ("。码密改修即立请，作操人本非如")."""
    owner = api.register(locale="zh")
    response = api.client.patch("/api/v1/me", headers=owner["headers"],
                                json={"email": f"{first}mallory@example.com", "login_password": LOGIN_PASSWORD})
    assert response.status_code == 200, response.json
    body = inbox.messages(to=owner["phone"], event="email_changed")[-1]["body"]
    assert not [ch for ch in body if unicodedata.category(ch) in ("Cf", "Mn")], ascii(body)
    assert "@example.com" in body


def test_an_ordinary_email_still_shows_its_first_character():
    assert mask_email("alice@mail.example.com") == "a***@mail.example.com"
    assert mask_email("用户@例子.中国") == "用***@例子.中国"


# Letters that Chinese, Japanese and Korean fonts draw as a dash or a stroke: the prolonged sound mark (typed on every
# Japanese and many Chinese keyboards), Hangul EU, Bopomofo I (a Taiwanese keyboard's), the CJK stroke 丨, and others.
_DASH_LETTERS = ["\u30fc", "\uff70", "\u3161", "\u3127", "\u4e28", "\u1428", "\u02cd", "\u0640"]


@pytest.mark.parametrize("dash", _DASH_LETTERS)
def test_a_device_name_cannot_show_a_number_dashed_with_letters_that_look_like_dashes(api, inbox, dash):
    """Found by this audit: "客服 138ー0013ー8000" reached the owner's "Not you?" alert as typed: each "ー" is a letter,
    so the number's parts were three numbers too short to be masked, while every reader sees 138-0013-8000."""
    body = _new_device_alert(api, inbox, f"客服 138{dash}0013{dash}8000", "zh")
    shown = body.split("“", 1)[1].split("”", 1)[0]
    read = _as_read(shown).replace(dash, "-").replace(unicodedata.normalize("NFKC", dash), "-")
    assert not _ANY_NUMBER.search(read), body


@pytest.mark.parametrize("device", ["Redmi Note 13 Pro 5G", "Galaxy S24 Ultra 12GB 256GB", "vivo X100 Pro",
                                    "HUAWEI Mate 60 Pro+", "iPad Air 5 (2022)", "Pixel 8a"])
def test_an_ordinary_device_name_with_model_numbers_is_shown_as_typed(device):
    assert f"“{device}”" in render("new_device_login", "zh", {"device": device, "time": "t"})


@pytest.mark.parametrize("device", ["客服 138ーー0013ーー8000", "客服 138ー ー0013ー ー8000", "客服 138ー0013ー8000"])
def test_a_dash_drawn_with_a_letter_twice_is_still_a_dash(device):
    shown = render("new_device_login", "zh", {"device": device, "time": "t"}).split("“", 1)[1].split("”", 1)[0]
    assert not _ANY_NUMBER.search(shown.replace("ー", "-")), shown
