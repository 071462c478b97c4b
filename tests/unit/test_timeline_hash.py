"""The timeline's entry hash: SHA-256 over the previous hash and the canonical JSON of the entry, whatever the
entry holds (property-based: the fast envelope equals ``canonical`` of the whole entry)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from wallet.timeline import GENESIS, canonical, entry_hash

_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                       max_leaves=8)


@given(seq=st.integers(min_value=1, max_value=10**9), at=st.text(), actor=st.text(), kind=st.text(),
       data=st.dictionaries(st.text(), _values, max_size=4))
def test_the_hash_is_over_the_canonical_json_of_the_whole_entry(seq, at, actor, kind, data):
    reference = canonical({"seq": seq, "at": at, "actor": actor, "kind": kind, "data": data})
    expected = hashlib.sha256((GENESIS + reference).encode()).hexdigest()
    assert entry_hash(GENESIS, seq, at, actor, kind, canonical(data)) == expected


def test_stored_data_that_is_not_exactly_what_was_hashed_does_not_check_out():
    data = canonical({"amount": 100, "movement": "pay"})
    digest = entry_hash(GENESIS, 1, "2026-01-15T08:00:00+00:00", "usr_1", "money", data)
    respaced = json.dumps(json.loads(data), sort_keys=True)  # same values, other spacing
    assert entry_hash(GENESIS, 1, "2026-01-15T08:00:00+00:00", "usr_1", "money", respaced) != digest
