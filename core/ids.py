"""Public identifiers: a type prefix and a time-ordered random part (ULID-like, Crockford base32).

They sort by creation time, so cursor pagination can use the id alone, and they reveal neither counts nor
neighbours the way sequential integers would.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Every pair of digits, by the 10-bit value it spells: the random part is eight look-ups (the standard library's
# base32 encoder is written in Python, and took twice as long).
_PAIRS = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
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


def _random_part(raw: bytes) -> str:
    """Ten bytes (80 bits) as 16 Crockford base32 digits, most significant first."""
    value, pairs = int.from_bytes(raw, "big"), _PAIRS
    return (pairs[value >> 70] + pairs[value >> 60 & 1023] + pairs[value >> 50 & 1023] + pairs[value >> 40 & 1023]
            + pairs[value >> 30 & 1023] + pairs[value >> 20 & 1023] + pairs[value >> 10 & 1023] + pairs[value & 1023])


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 characters of millisecond time + 16 characters (80 bits) of randomness."""
    return f"{prefix}_{_time_part(time.time_ns() // 1_000_000)}{_random_part(os.urandom(10))}"
