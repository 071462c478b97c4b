"""Public identifiers: a type prefix and a time-ordered random part (ULID-like, Crockford base32).

They sort by creation time, so cursor pagination can use the id alone, and they reveal neither counts nor
neighbours the way sequential integers would.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """``prefix_`` + 10 characters of millisecond time + 16 characters (80 bits) of randomness."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_b32(millis, 10)}{_b32(rand, 16)}"
