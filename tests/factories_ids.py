"""Fake resident ID numbers and fake bank card numbers, generated with correct check digits.

Nothing here is copied from a real person or a real card:

- Resident IDs are built from a real region code (so ``stdnum.cn.ric`` accepts the region), a birth date in
  1900-1909 (18-digit numbers were first issued in 1999, so hardly anyone holds one with such a date), a
  counter-driven sequence code, and the GB 11643 check digit computed by ``stdnum.cn.ric``.
- Card numbers start with ``00`` (ISO/IEC 7812 major industry identifier 0, never used for payment cards)
  and carry a Luhn check digit computed by ``stdnum.luhn``.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from stdnum import luhn
from stdnum.cn import ric

REGIONS = ("110101", "110102", "110105", "310101", "310104")  # Beijing and Shanghai districts, valid since 1900
_FIRST_BIRTH_DATE = date(1900, 1, 1)
_ids = itertools.count()
_cards = itertools.count(1)
# What the sandbox bank (wallet.banks) does something special for: 0000 refuses to link, 9999 declines a debit, 8888
# fails a payout.
SANDBOX_ENDINGS = ("0000", "8888", "9999")


def with_check_digit(first17: str) -> str:
    """Append the GB 11643 check digit (0-9 or X) to 17 digits."""
    return first17 + ric.calc_check_digit(first17 + "0")


def make_id_number(*, region: str | None = None, birth: date | str | None = None, sequence: str | None = None) -> str:
    """A fresh check-digit-valid fake resident ID. ``sequence="999"`` is the sandbox's name mismatch.

    ``birth`` may be a ``YYYYMMDD`` string to build deliberately impossible dates (the check digit is still
    right, so only the date is wrong).
    """
    n = next(_ids)
    region = region or REGIONS[n % len(REGIONS)]
    if birth is None:
        birth = _FIRST_BIRTH_DATE + timedelta(days=(n // 998) % 3650)
    birth_text = birth if isinstance(birth, str) else birth.strftime("%Y%m%d")
    sequence = sequence or f"{n % 998 + 1:03d}"  # 001-998: never the sandbox's 999 by accident
    return with_check_digit(region + birth_text + sequence)


def wrong_check_digit(id_number: str) -> str:
    """The same number with a check digit that does not match."""
    right = id_number[-1]
    return id_number[:-1] + ("0" if right != "0" else "1")


def make_card_number(*, ending: str = "", length: int = 16) -> str:
    """A fresh Luhn-valid fake card number of ``length`` digits (16-19) whose last digits are ``ending``.

    The check digit is the last digit, so a fixed ending is reached by choosing one free digit before it.
    """
    if not 12 <= length <= 19 or len(ending) > length - 8:
        raise ValueError("unsupported length/ending")
    body = f"00{next(_cards):0{length - 3 - len(ending)}d}"
    if not ending:
        number = body + luhn.calc_check_digit(body)
        # Never one of the sandbox bank's endings by accident (as make_id_number never draws its 999): a test asks for
        # those by name, and one drawn by the counter made an ordinary card's top-up fail in whatever test drew it.
        return make_card_number(length=length) if number.endswith(SANDBOX_ENDINGS) else number
    for free in "0123456789":
        candidate = body + free + ending
        if luhn.is_valid(candidate):
            return candidate
    raise AssertionError("unreachable: exactly one free digit satisfies Luhn")


def break_luhn(card_number: str) -> str:
    """The same number with its last digit changed, so the Luhn check fails."""
    last = int(card_number[-1])
    return card_number[:-1] + str((last + 1) % 10)
