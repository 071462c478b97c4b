"""SMS texts for every event, in Chinese and English, and the masking helpers they use.

Rules for every text: no password, no full card number, no full phone number of anyone but the
recipient, nothing that lets a reader take over the account (one-time codes aside, which say not to share).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

DEFAULT_LOCALE = "zh"
LOCALES = ("zh", "en")

SIGNATURE = {"zh": "【担保钱包】", "en": "[EscrowWallet] "}

TEMPLATES: dict[str, dict[str, str]] = {
    "sms_code": {
        "zh": "验证码 {code}，{minutes} 分钟内有效，用于{purpose_zh}。请勿告诉任何人。",
        "en": "Your code is {code}, valid for {minutes} minutes, to {purpose_en}. Never share it.",
    },
    "account_exists": {
        "zh": "有人尝试用本号码注册，但本号码已有账户。如忘记密码，请使用找回密码。",
        "en": "Someone tried to register this number, which already has an account. Forgot it? Use password recovery.",
    },
    "registered": {
        "zh": "欢迎！您的账户已用本号码 {phone} 注册成功。",
        "en": "Welcome! Your account was registered with this number {phone}.",
    },
    "new_device_login": {
        "zh": "您的账户于 {time} 在新设备“{device}”上登录。如非本人操作，请立即修改登录密码。",
        "en": "Your account signed in on a new device \"{device}\" at {time}. Not you? Change your login password now.",
    },
    "login_password_changed": {
        "zh": "您的登录密码已于 {time} 修改，其他设备已退出登录。如非本人操作，请立即找回密码。",
        "en": "Your login password was changed at {time}; other devices were signed out. Not you? Recover it now.",
    },
    "payment_password_changed": {
        "zh": "您的支付密码已于 {time} 修改。如非本人操作，请立即联系客服。",
        "en": "Your payment password was changed at {time}. Not you? Contact support now.",
    },
    "password_recovered": {
        "zh": "您的登录密码已于 {time} 通过短信验证重置，所有设备已退出登录。",
        "en": "Your login password was reset by SMS at {time}; all devices were signed out.",
    },
    "phone_changed_old": {
        "zh": "您的账户绑定手机已于 {time} 由本号码改为 {new_phone}。如非本人操作，请立即联系客服。",
        "en": "Your account's phone was changed from this number to {new_phone} at {time}. Not you? Contact support.",
    },
    "phone_changed_new": {
        "zh": "本号码已于 {time} 绑定为您的账户手机。",
        "en": "This number became your account's phone at {time}.",
    },
    "email_changed": {
        "zh": "您的账户邮箱已于 {time} 修改为 {email}。如非本人操作，请立即修改密码。",
        "en": "Your account email was changed to {email} at {time}. Not you? Change your password now.",
    },
    "login_locked": {
        "zh": "您的登录密码连续输错，已锁定至 {until}。如非本人操作，请通过短信找回密码。",
        "en": "Too many wrong login passwords: sign-in is locked until {until}. Not you? Recover your password by SMS.",
    },
    "payment_locked": {
        "zh": "您的支付密码连续输错，支付已锁定至 {until}。如非本人操作，请通过短信重置支付密码。",
        "en": "Too many wrong payment passwords: payments are locked until {until}. Not you? Reset it by SMS.",
    },
}

PURPOSES = {
    "register": ("注册", "register"),
    "login": ("登录新设备", "sign in on a new device"),
    "recover": ("找回密码", "recover your password"),
    "change_phone": ("更换手机号", "change your phone number"),
}


def mask_phone(e164: str) -> str:
    """``+8613800138000`` → ``138****8000`` (national part, middle four hidden)."""
    national = e164[3:] if e164.startswith("+86") else e164.lstrip("+")
    if len(national) < 8:
        return "*" * len(national)
    return f"{national[:3]}****{national[-4:]}"


def mask_card(number: str) -> str:
    """``6222020200112233445`` → ``**** 3445``."""
    return f"**** {number[-4:]}"


def mask_email(email: str) -> str:
    """``alice@example.com`` → ``a***@example.com``."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def render(event: str, locale: str, params: dict[str, Any]) -> str:
    """The text for ``event`` in ``locale`` (falling back to Chinese), signature first."""
    lang = locale if locale in LOCALES else DEFAULT_LOCALE
    try:
        template = TEMPLATES[event][lang]
    except KeyError as exc:
        raise KeyError(f"no SMS template for event {event!r}") from exc
    values = dict(params)
    if "purpose" in values:
        values["purpose_zh"], values["purpose_en"] = PURPOSES[values["purpose"]]
    return SIGNATURE[lang] + template.format(**values)


_CST = timezone(timedelta(hours=8))


def format_time(moment: datetime) -> str:
    """Times in texts are China Standard Time, which every recipient of a +86 number reads."""
    return moment.astimezone(_CST).strftime("%Y-%m-%d %H:%M") + " (UTC+8)"
