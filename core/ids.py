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
# The latest id: its millisecond, the time part that spells it, and its random part. Ids made in the same
# millisecond share the time part, and each takes a random part above the one before (``new_id``). One tuple, replaced
# whole, so a thread never pairs one millisecond with another's text.
_latest: tuple[int, str, int] = (-1, "", 0)
_RANDOM_BITS = 80
# An id made in the same millisecond as the one before takes a random part up to 2**48 above it: in the order made,
# and no easier to guess from its neighbour than a fresh one would be to find by trying.
_STEP_BITS = 48


def _b32(value: int, length: int) -> str:
    """``value`` as ``length`` Crockford base32 digits, most significant first."""
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _spelt(value: int) -> str:
    """An 80-bit value as 16 Crockford base32 digits, most significant first."""
    pairs = _PAIRS
    return (pairs[value >> 70] + pairs[value >> 60 & 1023] + pairs[value >> 50 & 1023] + pairs[value >> 40 & 1023]
            + pairs[value >> 30 & 1023] + pairs[value >> 20 & 1023] + pairs[value >> 10 & 1023] + pairs[value & 1023])


def _random_part(raw: bytes) -> str:
    """Ten bytes (80 bits) as 16 Crockford base32 digits, most significant first."""
    return _spelt(int.from_bytes(raw, "big"))


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 characters of millisecond time + 16 characters (80 bits) of randomness. Within one process
    ids sort in the order they were made, also within a millisecond (as monotonic ULIDs do, but with a random step
    instead of +1); across processes, by the millisecond only."""
    global _latest
    millis = time.time_ns() // 1_000_000
    fresh = os.urandom(10)
    latest = _latest
    if latest[0] == millis:
        text = latest[1]
        value = latest[2] + 1 + (int.from_bytes(fresh, "big") >> (_RANDOM_BITS - _STEP_BITS))
        if value >> _RANDOM_BITS:  # past the top (about once in 2**32 ids of one millisecond): a fresh start
            value = int.from_bytes(fresh, "big")
    else:
        text, value = _b32(millis, 10), int.from_bytes(fresh, "big")
    _latest = (millis, text, value)
    return f"{prefix}_{text}{_spelt(value)}"
