"""Found by the twenty-eighth session's CI run: ``make_card_number()`` counts up, and the fresh clone's suite drew a
plain card ending in 8888 (the sandbox bank's failing payout) for the funds state machine, which refused it; any
other test drawing such an ordinary card would have seen its payout fail, or its debit declined (9999), or its link
refused (0000), for a reason it never asked for."""

from __future__ import annotations

from stdnum import luhn

from tests.factories_ids import SANDBOX_ENDINGS, make_card_number


def test_an_ordinary_card_never_ends_as_the_sandbox_banks_special_cards_do():
    drawn = [make_card_number() for _ in range(30_000)]
    assert not [number for number in drawn if number.endswith(SANDBOX_ENDINGS)]
    assert all(luhn.is_valid(number) and len(number) == 16 for number in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_special_ending_is_still_given_when_asked_for():
    for ending in SANDBOX_ENDINGS:
        number = make_card_number(ending=ending)
        assert number.endswith(ending) and luhn.is_valid(number)
