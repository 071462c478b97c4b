"""Public ids: a prefix, ten characters of millisecond time and sixteen of randomness, in Crockford base32."""

from __future__ import annotations

import base64
import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from core import ids

_ID = re.compile(r"^trd_[0-9a-hjkmnp-tv-z]{26}$")


def test_an_id_is_the_prefix_and_26_crockford_characters():
    made = {ids.new_id("trd") for _ in range(1000)}
    assert len(made) == 1000
    assert all(_ID.match(one) for one in made)


def test_ids_made_later_sort_later(monkeypatch):
    now = [1_700_000_000_000_000_000]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    first = ids.new_id("trd")
    now[0] += 1_000_000  # one millisecond later
    assert ids.new_id("trd") > first


def _value(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 32 + ids._ALPHABET.index(digit)
    return value


def test_ids_made_in_one_millisecond_sort_in_the_order_made_with_unguessable_steps(monkeypatch):
    """Found as a flaky page test: two trades opened in the same millisecond came back in either order."""
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    made = [ids.new_id("trd") for _ in range(1000)]
    assert made == sorted(made) and len(set(made)) == 1000
    assert len({one[4:14] for one in made}) == 1  # one millisecond
    steps = {_value(b[14:]) - _value(a[14:]) for a, b in itertools.pairwise(made)}
    assert min(steps) >= 1 and len(steps) > 990  # never +1 each time: a neighbour does not give the next one away


_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


@given(st.binary(min_size=10, max_size=10))
def test_the_random_part_spells_its_80_bits_in_crockford_order(raw):
    spelt = ids._random_part(raw)
    assert spelt == ids._b32(int.from_bytes(raw, "big"), 16)
    assert spelt == base64.b32encode(raw).translate(_CROCKFORD).decode()  # RFC 4648 base32, Crockford's digits
