"""SMS texts for every event, in Chinese and English, and the masking helpers they use.

Rules for every text: no password, no full card number, no full phone number of anyone but the
recipient, nothing that lets a reader take over the account (one-time codes aside, which say not to share).

Parameters by name: ``amount`` is integer fen (or a string already made by ``format_amount``); ``card`` is
``mask_card(number)``; a phone (``payer``, ``payee``, ``new_phone``, ``phone``) is ``mask_phone(e164)``;
``time``/``deadline`` are ``format_time(moment)``, ``until`` is ``format_until(moment)``; ``trade`` is
``short_ref(trade_id)``. ``render`` masks any run of seven or more digits it is still given, so a careless caller
cannot leak one, and reduces what a user typed (``device``) to plain words, so nobody can make a text show a number or
a link.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any

import phonenumbers

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
    "held_after_recovery": {
        "zh": "您的登录密码近期通过短信重置，{time} 修改支付密码、手机号、身份验证器或实名认证的请求已被拒绝，"
              "{until} 后方可进行。如非本人操作，请立即联系客服。",
        "en": "Your login password was reset by SMS recently, so a change of payment password, phone number, "
              "authenticator or real-name identity was refused at {time}; it is possible after {until}. Not you? "
              "Contact support now.",
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
    "totp_enabled": {
        "zh": "您的账户已于 {time} 绑定身份验证器，新设备登录可使用其验证码。如非本人操作，请立即修改登录密码。",
        "en": "An authenticator app was set up for your account at {time}. Not you? Change your login password now.",
    },
    "totp_disabled": {
        "zh": "您账户原有的身份验证器已于 {time} 停用。如非本人操作，请立即修改登录密码。",
        "en": "Your account's authenticator app was switched off at {time}. Not you? Change your login password now.",
    },
    "login_locked": {  # {lock_zh} / {lock_en}: made from ``until`` (see LOCKS)
        "zh": "您的登录密码连续输错，{lock_zh}。如非本人操作，请通过短信找回密码。",
        "en": "Too many wrong login passwords: {lock_en}. Not you? Recover your password by SMS.",
    },
    "payment_locked": {
        "zh": "您的支付密码连续输错，{lock_zh}。如非本人操作，请通过短信重置支付密码。",
        "en": "Too many wrong payment passwords: {lock_en}. Not you? Reset it by SMS.",
    },
    "recovery_locked": {
        "zh": "找回密码时身份验证器验证码连续输错，找回密码已锁定至 {until}。"
              "如非本人操作，您的手机卡可能已被他人控制，请联系运营商。",
        "en": "Too many wrong authenticator codes while recovering your password: recovery is locked until {until}. "
              "Not you? Someone may hold your SIM: contact your carrier.",
    },
    "account_frozen": {
        "zh": "您的账户已于 {time} 被平台冻结，暂停付款、充值和提现，收款不受影响。如有疑问，请联系客服。",
        "en": "Your account was frozen by the platform at {time}: no payments, top-ups or withdrawals until it is "
              "lifted; you can still receive money. Questions? Contact support.",
    },
    "account_unfrozen": {
        "zh": "您的账户已于 {time} 解除冻结，付款、充值和提现已恢复。",
        "en": "Your account was unfrozen at {time}: payments, top-ups and withdrawals work again.",
    },
    "identity_verified": {
        "zh": "您的账户已于 {time} 完成实名认证（{name}，证件尾号 {last4}）。如非本人操作，请立即联系客服。",
        "en": "Your account was verified as {name} (ID ending {last4}) at {time}. Not you? Contact support.",
    },
    "card_bound": {
        "zh": "您的账户已于 {time} 绑定{bank}银行卡 {card}。如非本人操作，请立即联系客服。",
        "en": "A card ({bank} {card}) was bound to your account at {time}. Not you? Contact support now.",
    },
    "card_removed": {
        "zh": "您的账户已于 {time} 解绑{bank}银行卡 {card}。如非本人操作，请立即联系客服。",
        "en": "The {bank} card {card} was removed from your account at {time}. Not you? Contact support now.",
    },
    # --- money (amounts are fen, rendered by format_amount; cards are masked by mask_card) ---------------
    "balance_payment": {
        "zh": "您于 {time} 用余额支付 {amount} 元给 {payee}。如非本人操作，请立即修改支付密码并联系客服。",
        "en": "You paid CNY {amount} from your balance to {payee} at {time}. "
              "Not you? Change your payment password and contact support now.",
    },
    "transfer_received": {
        "zh": "{payer} 于 {time} 向您转账 {amount} 元，已存入余额。",
        "en": "{payer} sent you CNY {amount} at {time}; it is in your balance.",
    },
    "topup_credited": {
        "zh": "您于 {time} 从银行卡 {card} 充值 {amount} 元，已存入余额。",
        "en": "CNY {amount} from card {card} was added to your balance at {time}.",
    },
    "withdrawal_requested": {
        "zh": "您于 {time} 申请提现 {amount} 元至银行卡 {card}，正在处理。如非本人操作，请立即联系客服。",
        "en": "You asked to withdraw CNY {amount} to card {card} at {time}; it is being processed. "
              "Not you? Contact support now.",
    },
    "withdrawal_completed": {
        "zh": "您提现的 {amount} 元已转入银行卡 {card}。",
        "en": "Your withdrawal of CNY {amount} was paid to card {card}.",
    },
    "withdrawal_failed": {
        "zh": "您提现至银行卡 {card} 的 {amount} 元未能到账，款项已退回余额。",
        "en": "Your withdrawal of CNY {amount} to card {card} failed; the money is back in your balance.",
    },
    # --- escrow trades ({trade} is short_ref(trade id), never the seller's free-text title) -----------
    "trade_paid_ship_now": {
        "zh": "买家已为交易 {trade} 付款 {amount} 元，款项由平台担保。请尽快发货。",
        "en": "The buyer paid CNY {amount} into escrow for trade {trade}. Please ship now.",
    },
    "trade_shipped": {
        "zh": "交易 {trade} 的卖家已发货。收到货后请确认收货；{deadline} 前未确认将自动确认。",
        "en": "The seller shipped trade {trade}. Confirm receipt when it arrives; "
              "it is confirmed automatically at {deadline}.",
    },
    "trade_shipped_refund_closed": {
        "zh": "交易 {trade} 的卖家已发货，您被拒绝的退款申请随之关闭。收到货后请确认收货，如有问题可再次申请退款；"
              "{deadline} 前未确认将自动确认。",
        "en": "The seller shipped trade {trade}, which closes the refund request they refused. Confirm receipt when "
              "it arrives, or ask for a refund again if something is wrong; it is confirmed automatically at "
              "{deadline}.",
    },
    "confirm_deadline_reminder": {
        "zh": "交易 {trade} 将于 {deadline} 自动确认收货，款项将付给卖家。如未收到货，请在此之前申请退款。",
        "en": "Trade {trade} will be confirmed automatically at {deadline} and the money paid to the seller. "
              "Not received? Ask for a refund before then.",
    },
    "trade_finished": {
        "zh": "交易 {trade} 已完成，{amount} 元已付给卖家。",
        "en": "Trade {trade} is finished; CNY {amount} was paid to the seller.",
    },
    "refund_requested": {
        "zh": "买家就交易 {trade} 申请退款 {amount} 元。请在 {deadline} 前处理，逾期视为同意。",
        "en": "The buyer asked for a refund of CNY {amount} on trade {trade}. "
              "Answer by {deadline}, or it counts as agreed.",
    },
    # The texts of the two events below before they named the buyer's deadline: a dispatcher of this release still
    # renders the events a release before it queued (their parameters have no deadline).
    "refund_agreed": {
        "zh": "卖家已同意交易 {trade} 的退款 {amount} 元。",
        "en": "The seller agreed to refund CNY {amount} on trade {trade}.",
    },
    "refund_refused": {
        "zh": "卖家拒绝了交易 {trade} 的退款申请。您可以申请平台介入。",
        "en": "The seller refused the refund on trade {trade}. You can ask the platform to decide.",
    },
    "refund_agreed_return_by": {  # the goods must come back first; the buyer's silence closes the refund
        "zh": "卖家已同意交易 {trade} 的退款 {amount} 元，请在 {deadline} 前寄回商品，逾期退款关闭。",
        "en": "The seller agreed to refund CNY {amount} on trade {trade}. Send the goods back by {deadline}, "
              "or the refund is closed.",
    },
    "refund_refused_escalate_by": {  # the buyer's silence closes the refund
        "zh": "卖家拒绝了交易 {trade} 的退款申请。您可以在 {deadline} 前申请平台介入，逾期退款关闭。",
        "en": "The seller refused the refund on trade {trade}. You can ask the platform to decide by {deadline}; "
              "after that the request is closed.",
    },
    "refund_goods_returned": {
        "zh": "买家已寄回交易 {trade} 的退货。请在 {deadline} 前确认收货，逾期视为已收到并退款给买家。",
        "en": "The buyer sent back the goods of trade {trade}. Confirm you got them by {deadline}, "
              "or they count as received and the buyer is refunded.",
    },
    "refund_closed": {
        "zh": "交易 {trade} 的退款申请因逾期未处理已关闭，交易继续进行。",
        "en": "The refund request on trade {trade} was closed because its deadline passed; the trade goes on.",
    },
    "refund_withdrawn": {
        "zh": "买家已撤销交易 {trade} 的退款申请，交易继续进行。",
        "en": "The buyer withdrew the refund request on trade {trade}; the trade goes on.",
    },
    "refund_completed": {
        "zh": "交易 {trade} 的退款 {amount} 元已退回您的余额。",
        "en": "The refund of CNY {amount} on trade {trade} is back in your balance.",
    },
    "refund_paid_on_silence": {
        "zh": "交易 {trade} 的退款期限已过，您未处理，{amount} 元已退还买家。",
        "en": "The deadline on the refund for trade {trade} passed without your answer; CNY {amount} went back "
              "to the buyer.",
    },
    "dispute_opened": {
        "zh": "交易 {trade} 已提交平台裁决，请在应用中提交证据。裁决期间交易期限暂停。",
        "en": "Trade {trade} went to the platform for a decision. Submit your evidence in the app; "
              "its deadlines are paused.",
    },
    "dispute_decided": {
        "zh": "平台已对交易 {trade} 作出裁决：{outcome_zh}，退款 {amount} 元。",
        "en": "The platform decided trade {trade}: {outcome_en}; refund CNY {amount}.",
    },
}

# A lock alert's ``until``: the time the lock lifts by itself (``format_time``), or UNTIL_RESET for a hard lock,
# which only an SMS-verified reset lifts. Each event words both in each language (zh, en).
UNTIL_RESET = "until-reset"
LOCKS = {
    "login_locked": (("登录已锁定至 {until}", "sign-in is locked until {until}"),
                     ("登录已锁定，须通过短信找回密码后解锁", "sign-in is locked until you reset the password by SMS")),
    "payment_locked": (("支付已锁定至 {until}", "payments are locked until {until}"),
                       ("支付已锁定，须通过短信重置支付密码后解锁",
                        "payments are locked until you reset the payment password by SMS")),
}

PURPOSES = {
    "register": ("注册", "register"),
    "login": ("登录新设备", "sign in on a new device"),
    "recover": ("找回密码", "recover your password"),
    "change_phone": ("更换手机号", "change your phone number"),
}

# ``new_device_login`` for a device without a name.
UNNAMED_DEVICE = {"zh": "未命名设备", "en": "unnamed device"}

# ``dispute_decided``: what the platform decided, in each language.
OUTCOMES = {
    "release": ("款项付给卖家", "the money goes to the seller"),
    "refund": ("全额退款给买家", "the buyer is refunded in full"),
    "split": ("部分退款给买家", "the buyer is refunded in part"),
}


@functools.lru_cache(maxsize=4096)
def mask_phone(e164: str) -> str:
    """``+8613800138000`` → ``138****8000``, ``+12025550147`` → ``20****0147``: the national number (without its
    country code, which hides nothing), its last four shown and at least four before them hidden, at most three
    shown before those; a number of fewer than eight digits is hidden whole (``+50051234`` → ``*****``).

    Remembered per process for the last 4,096 numbers: parsing one costs about as much as reading a statement line,
    and a statement page masks each counterparty's number (a page of twenty payments to twenty people parsed twenty
    numbers on every read)."""
    try:
        parsed = phonenumbers.parse(e164)
        country = str(parsed.country_code) if phonenumbers.is_possible_number(parsed) else ""
    except phonenumbers.NumberParseException:
        country = ""
    digits = e164.lstrip("+")
    national = digits[len(country):] if country and digits.startswith(country) else digits
    if len(national) < 8:
        return "*" * len(national)
    hidden = max(4, len(national) - 7)
    return f"{national[:len(national) - hidden - 4]}{'*' * hidden}{national[-4:]}"


def mask_card(number: str) -> str:
    """``6222020200112233445`` → ``**** 3445``."""
    return f"**** {number[-4:]}"


# The domain an email alert shows: a host name short enough to read at a glance, nothing else.
_HOST_NAME = re.compile(r"^[\w-]+(?:\.[\w-]+)+$")  # letters of any script: 例子.中国 is a host name too


def mask_email(email: str) -> str:
    """``alice@example.com`` → ``a***@example.com``. A domain that is no plain host name (a path, a query: a link
    in disguise) or longer than 48 characters is masked too (``a***@***``), and a number in it as everywhere. The
    first character shows only if it is a letter or digit: a right-to-left override (U+202E) there drew the rest of
    the alert backwards (found by an audit)."""
    local, _, domain = email.partition("@")
    first = local[:1] if local[:1].isalnum() else "*"
    domain = unicodedata.normalize("NFKC", domain)
    if not (_HOST_NAME.match(domain) and len(domain) <= 48):
        return f"{first}***@***"
    return f"{first}***@{_SPACED_NUMBER.sub(_mask_number, domain)}"


def format_amount(fen: int) -> str:
    """``19900`` → ``"199.00"``, ``123456789`` → ``"1,234,567.89"``: yuan, two decimals, thousands grouped."""
    if not isinstance(fen, int) or isinstance(fen, bool):
        raise TypeError(f"amounts are integer fen, got {type(fen).__name__}")
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def short_ref(public_id: str) -> str:
    """A trade's reference in texts: the last 8 characters of its id (``trd_…k3v9x2ab`` → ``K3V9-X2AB``).

    The dash keeps an all-digit tail from looking like (and being masked as) a phone number.
    """
    tail = public_id[-8:].upper()
    return f"{tail[:4]}-{tail[4:]}"


def render(event: str, locale: str, params: dict[str, Any]) -> str:
    """The text for ``event`` in ``locale`` (falling back to Chinese), signature first."""
    lang = locale if locale in LOCALES else DEFAULT_LOCALE
    try:
        template = TEMPLATES[event][lang]
    except KeyError as exc:
        raise KeyError(f"no SMS template for event {event!r}") from exc
    values = {name: _safe_value(name, value) for name, value in params.items()}
    if "purpose" in values:
        values["purpose_zh"], values["purpose_en"] = PURPOSES[values["purpose"]]
    if "outcome" in values:
        values["outcome_zh"], values["outcome_en"] = OUTCOMES[values["outcome"]]
    if "device" in values and not values["device"]:
        values["device"] = UNNAMED_DEVICE[lang]  # the app sent no name, or one with nothing to show
    if event in LOCKS and "until" in values:
        timed, hard = LOCKS[event]
        phrases = hard if values["until"] == UNTIL_RESET else timed
        values["lock_zh"], values["lock_en"] = (phrase.format(until=values["until"]) for phrase in phrases)
    return SIGNATURE[lang] + template.format(**values)


# Seven or more digits in a row is a phone, card or ID number; no text needs one (codes are six digits).
_LONG_NUMBER = re.compile(r"\+?\d{7,}")
# Letters that every font draws as blank space (the Hangul fillers; NFKC turns U+3164 and U+FFA0 into U+1160): to a
# reader they are a gap, so between digits they part a number as a space does (found by an audit: "138ㅤ0013ㅤ8000").
_BLANK_LETTERS = "\u115f\u1160\u3164\uffa0"
# The digits as Chinese writes a number in words (how it is read aloud, and how spam slips one past filters: "一三八
# 零零一三八零零零"): ordinary and financial numerals, 〇, and 幺 (么) for one. Found by an audit.
_CHINESE_DIGITS = "〇零一二三四五六七八九壹贰貳叁參肆伍陆陸柒捌玖幺么"
_DIGIT = rf"[\d{_CHINESE_DIGITS}]"
# Between two digits of one number: any marks, blank letters, and one other letter (repeated or not), since many
# letters are drawn as a dash or a stroke ("138ー0013ー8000", "138ーー0013", with the prolonged sound mark; Hangul ㅡ,
# Bopomofo ㄧ, 丨: found by an audit). Two different letters part numbers ("Note 13 Pro 5G" shows).
_MARKS = rf"[\W_{_BLANK_LETTERS}]*"
_GAP = rf"{_MARKS}(?:([^\W\d_{_CHINESE_DIGITS}])(?:{_MARKS}\1)*{_MARKS})?"
# In what a user typed, a number is one however it is written: apart, dashed, bracketed, full-width, in Chinese
# numerals, or its digits joined by any other mark a name keeps ('#', '_', "'", '+'), by a blank letter, or by a letter
# that looks like a dash.
_SPACED_NUMBER = re.compile(rf"\+?{_DIGIT}(?:{_GAP}{_DIGIT}){{6,}}")
# A name the user typed keeps words and a few marks; the rest ('.', '/', ':', '@', line breaks, invisible
# format characters and blank letters) would let it spell a link or start a second message, and becomes a space.
_NOT_PLAIN = re.compile(rf"[^\w\s\-()'#+]|[{_BLANK_LETTERS}]")
# Names a user typed that a text quotes, and how much of each it shows.
FREE_TEXT = {"device": 40}


def _mask_number(match: re.Match[str]) -> str:
    return "****" + "".join(ch for ch in match.group() if ch.isdigit() or ch in _CHINESE_DIGITS)[-4:]


def _space_unless_mark(match: re.Match[str]) -> str:
    """A combining mark is part of the letter before it: Devanagari, Thai, Tamil and Arabic write vowels with them, and
    "राम का फ़ोन" read "र म क फ न" with each one a space (an item the last note left). No mark spells a link."""
    char = match.group()
    return char if unicodedata.category(char).startswith("M") else " "


def plain_words(text: str, limit: int) -> str:
    """``text`` as words on one line, no number or link in it, at most ``limit`` characters."""
    # NFKC first: circled, superscript and full-width digits and letters read as the plain ones they stand for.
    words = " ".join(_NOT_PLAIN.sub(_space_unless_mark, unicodedata.normalize("NFKC", text)).split())
    return _SPACED_NUMBER.sub(_mask_number, words)[:limit].strip()


def _safe_value(name: str, value: Any) -> Any:
    """Amounts given in fen are formatted; a long number that slipped through unmasked is masked here.

    Callers already pass masked values (``mask_phone``, ``mask_card``); this is the second line of defence
    that makes "no SMS carries a full phone, card or ID number" true whatever a caller passes. What a user
    typed (``FREE_TEXT``) is reduced to plain words: whoever names a device must not be able to make the
    owner's "Not you?" alert show a number to call or a link to follow.
    """
    if name == "amount" and isinstance(value, int) and not isinstance(value, bool):
        return format_amount(value)
    if name in FREE_TEXT and isinstance(value, str):
        return plain_words(value, FREE_TEXT[name])
    if name != "code" and isinstance(value, str):
        return _LONG_NUMBER.sub(lambda match: "****" + match.group()[-4:], value)
    return value


_CST = timezone(timedelta(hours=8))


def format_time(moment: datetime) -> str:
    """Times in texts are China Standard Time, which every recipient of a +86 number reads."""
    return moment.astimezone(_CST).strftime("%Y-%m-%d %H:%M") + " (UTC+8)"


def format_until(moment: datetime) -> str:
    """When something that holds the reader back ends (a lock, a hold), as ``format_time`` but to the next whole
    minute: a lock ending at 16:00:40 reads 16:01, never a 16:00 at which the reader would still find it locked."""
    whole = moment.replace(second=0, microsecond=0)
    return format_time(whole if whole == moment else whole + timedelta(minutes=1))
