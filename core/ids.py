"""Public identifiers: a type prefix and a time-ordered random part (ULID-like, Crockford base32).

They sort by creation time, so cursor pagination can use the id alone, and they reveal neither counts nor
neighbours the way sequential integers would.
"""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# RFC 4648 base32 (what the standard library encodes in C) spelt in the Crockford alphabet: same order of values.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
# The time part of the latest id (ids made in the same millisecond share it): one tuple, replaced whole, so a
# thread never pairs one millisecond with another's text.
_latest: tuple[int, str] = (-1, "")


def _b32(value: int, length: int) -> str:
    """``value`` as ``length`` Crockford base32 digits, most significant first."""
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _time_part(millis: int) -> str:
    global _latest
    latest = _latest
    if latest[0] != millis:
        latest = _latest = (millis, _b32(millis, 10))
    return latest[1]


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 characters of millisecond time + 16 characters (80 bits) of randomness."""
    random_part = base64.b32encode(os.urandom(10)).translate(_CROCKFORD).decode()  # 80 bits: 16 characters
    return f"{prefix}_{_time_part(time.time_ns() // 1_000_000)}{random_part}"
