"""Test data with automatic unique values. Phone numbers come from the NANP range reserved for fiction
(555-0100 to 555-0199), never a real person's number."""

from __future__ import annotations

import itertools

import phonenumbers

_AREA_CODES = ["202", "212", "213", "305", "310", "312", "404", "415", "503", "512", "602", "617", "646",
               "702", "718", "720", "801", "808", "917", "919"]
_FICTIONAL = [
    f"+1{area}55501{n:02d}"
    for area in _AREA_CODES
    for n in range(100)
    if phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area}55501{n:02d}"))
]
_counter = itertools.count()

LOGIN_PASSWORD = "correct horse battery"
PAYMENT_PASSWORD = "135790"


def make_phone() -> str:
    """A fresh, valid, fictional mobile number in E.164."""
    return _FICTIONAL[next(_counter) % len(_FICTIONAL)]
