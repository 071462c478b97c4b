"""Public ids: a prefix, ten characters of millisecond time and sixteen of randomness, in Crockford base32."""

from __future__ import annotations

import base64
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


_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


@given(st.binary(min_size=10, max_size=10))
def test_the_random_part_spells_its_80_bits_in_crockford_order(raw):
    spelt = ids._random_part(raw)
    assert spelt == ids._b32(int.from_bytes(raw, "big"), 16)
    assert spelt == base64.b32encode(raw).translate(_CROCKFORD).decode()  # RFC 4648 base32, Crockford's digits
