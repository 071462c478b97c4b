"""A card number is said to be accepted with spaces (API document: "spaces and hyphens are ignored"), but only the
ASCII space was: the full-width space of a Chinese keyboard, a no-break space pasted from a banking app or a trailing
newline made it invalid_card_number (found by the identity audit)."""

from __future__ import annotations

import pytest

from tests.api.test_bank_cards import bind, card_rows, verified_user
from tests.factories_ids import make_card_number


@pytest.mark.parametrize("separator", ["\u3000", "\u00a0", "\t"], ids=["full-width space", "no-break space", "tab"])
def test_any_space_between_groups_is_ignored(api, app, separator):
    account = verified_user(api)
    number = make_card_number(length=19)
    response = bind(api, account, separator.join(number[i:i + 4] for i in range(0, 19, 4)) + "\n")
    assert response.status_code == 201, response.json
    assert response.json["masked"] == f"**** {number[-4:]}"
    assert [row["last4"] for row in card_rows(app)] == [number[-4:]]


def test_other_characters_between_digits_are_still_refused(api):
    response = bind(api, verified_user(api), "/".join(make_card_number()))
    assert (response.status_code, response.json["code"]) == (422, "invalid_card_number")
