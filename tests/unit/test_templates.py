"""Every SMS text renders in Chinese and English, and none leaks a full phone or card number or a password."""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest

from notifications.templates import (
    LOCALES,
    OUTCOMES,
    SIGNATURE,
    TEMPLATES,
    UNTIL_RESET,
    format_amount,
    format_time,
    format_until,
    mask_card,
    mask_email,
    mask_phone,
    render,
    short_ref,
)

# DESIGN 5.3, by the names the services enqueue.
DESIGN_EVENTS = {
    # account
    "registered", "new_device_login", "login_password_changed", "payment_password_changed", "password_recovered",
    "login_locked", "payment_locked", "phone_changed_old", "phone_changed_new", "email_changed", "card_bound",
    "card_removed", "identity_verified",
    # money
    "balance_payment", "transfer_received", "topup_credited", "withdrawal_requested", "withdrawal_completed",
    "withdrawal_failed",
    # escrow
    "trade_paid_ship_now", "trade_shipped", "confirm_deadline_reminder", "trade_finished", "refund_requested",
    "refund_agreed_return_by", "refund_refused_escalate_by", "refund_completed", "dispute_opened", "dispute_decided",
    # codes
    "sms_code", "account_exists",
}

# Sensitive values handed to every template *unmasked*, as a careless caller might: none may come out.
OTHER_PERSONS_PHONE = "+12025550147"
CHINESE_PHONE = "+8613800138000"
CARD_NUMBER = "6222020200112233445"
ID_NUMBER = "11010519491231002X"
PASSWORDS = ("correct horse battery", "135790")


def fake_value(field: str) -> Any:
    """A value for a template field, chosen by its name."""
    if field in ("payer", "payee", "new_phone"):
        return OTHER_PERSONS_PHONE
    if field == "phone":
        return CHINESE_PHONE
    if field == "card":
        return CARD_NUMBER
    if field == "id_number":
        return ID_NUMBER
    if field == "last4":
        return CARD_NUMBER[-4:]
    if field == "amount":
        return 19900
    if field in ("time", "until", "deadline"):
        return format_time(datetime(2026, 1, 15, 8, 0, tzinfo=UTC))
    if field == "trade":
        return short_ref("trd_01jh5v3kq4m8n2p6r9s7t1w3xy")
    if field == "email":
        return mask_email("alice@example.com")
    if field == "code":
        return "482915"
    if field == "minutes":
        return 10
    if field == "purpose":
        return "recover"
    return "Sample"


def fields_of(template: str) -> set[str]:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    # Derived fields come from a parameter of another name.
    if names & {"purpose_zh", "purpose_en"}:
        names = (names - {"purpose_zh", "purpose_en"}) | {"purpose"}
    if names & {"outcome_zh", "outcome_en"}:
        names = (names - {"outcome_zh", "outcome_en"}) | {"outcome"}
    if names & {"lock_zh", "lock_en"}:
        names = (names - {"lock_zh", "lock_en"}) | {"until"}
    return names


def params_for(event: str, locale: str) -> dict[str, Any]:
    params = {name: fake_value(name) for name in fields_of(TEMPLATES[event][locale])}
    if "outcome" in params:
        params["outcome"] = "split"
    # Extra parameters a service might pass along by mistake; a template never shows them.
    params.update(password=PASSWORDS[0], payment_password=PASSWORDS[1], card_number=CARD_NUMBER)
    return params


def test_every_event_of_the_design_has_a_text_in_both_languages():
    missing = DESIGN_EVENTS - set(TEMPLATES)
    assert not missing, f"no template for {sorted(missing)}"
    for event, texts in TEMPLATES.items():
        assert set(texts) == set(LOCALES), event


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("event", sorted(TEMPLATES))
def test_template_renders_without_leaking_secrets(event, locale):
    text = render(event, locale, params_for(event, locale))

    assert text.startswith(SIGNATURE[locale])
    assert "{" not in text and "}" not in text
    for secret in (OTHER_PERSONS_PHONE, OTHER_PERSONS_PHONE[1:], OTHER_PERSONS_PHONE[2:], CARD_NUMBER, ID_NUMBER,
                   CHINESE_PHONE, CHINESE_PHONE[3:], *PASSWORDS):
        assert secret not in text, f"{event}/{locale} shows {secret!r}: {text}"
    # No run of seven digits at all: that would be a phone, card or ID number. Codes have six.
    assert not re.search(r"\d{7,}", text), text
    if locale == "zh":
        assert re.search(r"[\u4e00-\u9fff]", text)
    else:
        assert not re.search(r"[\u4e00-\u9fff]", text), text


@pytest.mark.parametrize("event", sorted(e for e, texts in TEMPLATES.items() if fields_of(texts["en"])))
def test_a_missing_parameter_is_an_error_not_a_blank(event):
    params = params_for(event, "en")
    params.pop(sorted(fields_of(TEMPLATES[event]["en"]))[0])
    with pytest.raises(KeyError):
        render(event, "en", params)


def test_the_locale_picks_the_language_and_unknown_locales_fall_back_to_chinese():
    params = {"time": "t"}
    assert render("payment_password_changed", "en", params).startswith("[EscrowWallet] Your payment password")
    assert render("payment_password_changed", "zh", params).startswith("【担保钱包】您的支付密码")
    assert render("payment_password_changed", "fr", params) == render("payment_password_changed", "zh", params)


def test_unknown_event_is_refused():
    with pytest.raises(KeyError, match="no SMS template"):
        render("no_such_event", "en", {})


@pytest.mark.parametrize(
    ("fen", "shown"),
    [(0, "0.00"), (1, "0.01"), (10, "0.10"), (19900, "199.00"), (199999, "1,999.99"),
     (123456789, "1,234,567.89"), (-550, "-5.50"), (10**12, "10,000,000,000.00")],
)
def test_amounts_are_yuan_with_two_decimals(fen, shown):
    assert format_amount(fen) == shown


@pytest.mark.parametrize("bad", [1.5, "199", True, None])
def test_amounts_must_be_integer_fen(bad):
    with pytest.raises(TypeError):
        format_amount(bad)


def test_an_amount_given_in_fen_is_formatted_by_the_template():
    by_int = render("transfer_received", "en", {"payer": "x", "amount": 19900, "time": "t"})
    by_str = render("transfer_received", "en", {"payer": "x", "amount": format_amount(19900), "time": "t"})
    assert by_int == by_str
    assert "CNY 199.00" in by_int


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("+8613800138000", "138****8000"), ("+12025550147", "20****0147"), ("+123", "***"),
     # Found by an audit: the country code counted as shown digits, so of a short foreign number (any country's
     # mobile may hold an account) only one digit was hidden: ``500****1234``.
     ("+50051234", "*****"), ("+376312345", "******"), ("+447400123456", "74****3456")],
)
def test_mask_phone(phone, masked):
    assert mask_phone(phone) == masked


def test_mask_card_and_email():
    assert mask_card(CARD_NUMBER) == "**** 3445"
    assert mask_email("alice@example.com") == "a***@example.com"


def test_a_full_number_passed_by_mistake_is_masked_but_the_code_is_not():
    text = render("transfer_received", "zh", {"payer": "+8613800138000", "amount": 100, "time": "t"})
    assert "13800138000" not in text and "****8000" in text
    code = render("sms_code", "en", {"code": "123456", "minutes": 10, "purpose": "login"})
    assert "123456" in code


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_every_dispute_outcome_renders_in_both_languages(outcome):
    for locale in LOCALES:
        text = render("dispute_decided", locale, {"trade": "ABCD-1234", "outcome": outcome, "amount": 500})
        assert OUTCOMES[outcome][LOCALES.index(locale)] in text


def test_short_ref_never_looks_like_a_phone_number():
    assert short_ref("trd_01jh5v3kq412345678") == "1234-5678"
    assert short_ref("trd_01jh5v3kq4m8n2p6r9s7t1w3xy") == "S7T1-W3XY"


@pytest.mark.parametrize("event", ["login_locked", "payment_locked"])
def test_a_hard_lock_is_worded_in_the_users_language(event):
    """Found by an audit: a hard lock (lifted only by an SMS reset) put the English words "SMS reset" where the
    time goes, also in the Chinese text."""
    zh, en = (render(event, locale, {"until": UNTIL_RESET}) for locale in ("zh", "en"))
    assert "短信" in zh and not re.search(r"[A-Za-z]", zh.removeprefix(SIGNATURE["zh"])), zh
    assert "by SMS" in en and not re.search(r"[\u4e00-\u9fff]", en), en
    timed = render(event, "zh", {"until": "2026-01-15 19:00"})
    assert "锁定至 2026-01-15 19:00" in timed and "解锁" not in timed


# What someone who signed in to another's account might type as his device's name so that the owner's
# "Not you?" alert carries his number, his link or a second, forged message.
HOSTILE_DEVICE_NAMES = [
    "Help desk 138 0013 8000",
    "Call +1 (202) 555-0147 now",
    "客服热线 400-800-1234",
    "客服 ４００－８００－１２３４",
    "客服 ①③⑧⓪⓪①③⑧⓪⓪⓪",
    "call ¹³⁸⁰⁰¹³⁸⁰⁰⁰",
    "https://wallet-help.example/login",
    "wallet-help.example",
    "ｗａｌｌｅｔ．example",
    "Pixel\n【担保钱包】Your account is frozen",
    "Pixel\u2028[EscrowWallet] Your account is frozen",
    "x" * 500,
    # Found by an audit: digits joined by the marks a name keeps were not seen as one number.
    "Call 400#800#1234",
    "客服 400_800_1234",
    "help +86+138+0013+8000",
    "138'0013'8000",
]
# A phone number however it is written: seven digits or more, apart or not (the times here are "t").
_ANY_NUMBER = re.compile(r"\d(?:[\W_]*\d){6,}")
_LINK = re.compile(r"://|www|[0-9A-Za-z０-９Ａ-Ｚａ-ｚ][.．。][A-Za-zＡ-Ｚａ-ｚ]", re.IGNORECASE)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("device", HOSTILE_DEVICE_NAMES)
def test_a_device_name_cannot_put_a_number_a_link_or_a_second_message_in_an_alert(device, locale):
    text = render("new_device_login", locale, {"device": device, "time": "t"})
    shown = text.removeprefix(SIGNATURE[locale])
    assert not _ANY_NUMBER.search(unicodedata.normalize("NFKC", text)), text
    assert not _LINK.search(text), text
    assert SIGNATURE[locale].strip() not in shown and "\n" not in text and "\u2028" not in text, text
    assert len(text) <= len(render("new_device_login", locale, {"device": "", "time": "t"})) + 40, text


@pytest.mark.parametrize("device", ["Xiaomi 14 Pro", "张三的 iPhone 15", "HUAWEI Mate 60 Pro+"])
def test_an_ordinary_device_name_is_shown_as_typed(device):
    assert f"“{device}”" in render("new_device_login", "zh", {"device": device, "time": "t"})


@pytest.mark.parametrize(
    "email",
    ["a@b.example/https://wallet-help.example/reset", "a@400-800-1234.example", "a@call.138.0013.8000.example",
     "a@" + "x" * 240 + ".example", "a@b.example?go=wallet-help.example", "a@１３８－００１３－８０００.example",
     "a@call_400_800_1234.example"],
)
def test_an_email_address_cannot_put_a_number_or_a_link_in_an_alert(email):
    text = render("email_changed", "en", {"email": mask_email(email), "time": "t"})
    assert not _ANY_NUMBER.search(text), text
    shown = text.split("changed to ", 1)[1].split(" at t.", 1)[0]
    assert "/" not in shown and "?" not in shown and "wallet-help" not in shown, text
    assert len(text) <= len(render("email_changed", "en", {"email": "", "time": "t"})) + 64, text


def test_an_ordinary_email_keeps_its_domain():
    assert mask_email("alice@mail.example.com") == "a***@mail.example.com"
    assert mask_email("用户@例子.中国") == "用***@例子.中国"
    assert mask_email("a@①③⑧⓪⓪①③⑧⓪⓪⓪.example") == "a***@****8000.example"


@pytest.mark.parametrize(("device", "locale", "shown"), [
    ("", "zh", "“未命名设备”"), ("", "en", '"unnamed device"'),
    ("...", "zh", "“未命名设备”"), ("//", "en", '"unnamed device"'),
])
def test_a_device_name_with_nothing_to_show_is_called_unnamed_in_the_users_language(device, locale, shown):
    assert shown in render("new_device_login", locale, {"device": device, "time": "t"})


def test_a_time_something_holds_the_reader_back_until_is_the_minute_it_has_ended_by():
    assert format_until(datetime(2026, 3, 2, 10, 59, 20, tzinfo=UTC)) == "2026-03-02 19:00 (UTC+8)"
    assert format_until(datetime(2026, 3, 2, 10, 59, 0, 1, tzinfo=UTC)) == "2026-03-02 19:00 (UTC+8)"
    assert format_until(datetime(2026, 3, 2, 11, 0, tzinfo=UTC)) == "2026-03-02 19:00 (UTC+8)"
    assert format_until(datetime(2026, 3, 2, 15, 59, 59, tzinfo=UTC)) == "2026-03-03 00:00 (UTC+8)"


def test_a_seven_digit_national_number_is_hidden_whole():
    # Iceland's numbers have seven national digits: "fewer than eight digits is hidden whole" must hold at seven, or
    # all but one digit of the number shows.
    assert mask_phone("+3545512345") == "*******"


def test_a_seven_digit_number_passed_by_mistake_is_masked():
    # Seven digits in a row is already a phone, card or ID number (codes have six): a caller's slip is masked.
    text = render("transfer_received", "en", {"payer": "5512345", "amount": 100, "time": "t"})
    assert "5512345" not in text and "****2345" in text


@pytest.mark.parametrize("bank", ["ICBC", "ABC", "BOC", "CCB"])
def test_the_english_card_texts_read_right_whatever_the_bank(bank):
    """The bound-card text read "A ICBC card" (and "A ABC card") for the banks whose code starts with a vowel."""
    for event in ("card_bound", "card_removed"):
        text = render(event, "en", {"bank": bank, "card": "**** 1234", "time": "2026-12-07 16:00"})
        assert f"A {bank}" not in text and f"a {bank}" not in text, text
        assert f"{bank} **** 1234" in text or f"{bank} card **** 1234" in text, text
