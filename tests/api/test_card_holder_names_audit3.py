"""Holder names typed with a full stop as the interpunct of a transliterated name (found by the identity audit):
``name_key`` meant to fold the full-width ``．`` into ``·`` but folded compatibility forms first, which turned it into
an ASCII full stop the interpunct table never saw, so the card was refused as card_holder_mismatch."""

from __future__ import annotations

import pytest

from security.identity import same_name
from tests.api.test_bank_cards import bind, verified_user


@pytest.mark.parametrize("typed", ["买买提．艾力", "买买提 ． 艾力", "买买提.艾力"],
                         ids=["full-width stop", "full-width stop with spaces", "ascii stop"])
def test_a_full_stop_between_chinese_characters_is_the_interpunct(api, typed):
    account = verified_user(api, "买买提·艾力")
    response = bind(api, account, holder_name=typed)
    assert response.status_code == 201, response.json


def test_a_full_stop_elsewhere_stays_a_full_stop():
    assert same_name("J．R． Smith", "J.R. Smith")
    assert not same_name("J. Smith", "J· Smith")
    assert not same_name("买买提．艾力", "买买提艾力")
