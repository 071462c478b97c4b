"""A statement asked for from a day after its last day (``from`` later than ``to``, dates swapped by a client) is a
validation error naming ``to``, not an empty statement a user reads as "no money moved" (found by the funds audit)."""

import pytest


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_statement_whose_first_day_is_after_its_last_is_refused(api, fmt):
    alice = api.verified()
    api.money("/api/v1/topups", alice, amount=100, bank_card_id=alice["card_id"])
    response = api.client.get(f"/api/v1/wallet/transactions?from=2026-03-02&to=2026-03-01&format={fmt}",
                              headers=alice["headers"])
    body = response.get_data(as_text=True)  # read whole: a CSV statement is streamed
    assert (response.status_code, response.mimetype) == (422, "application/problem+json"), body[:200]
    assert response.json["code"] == "validation_failed"
    assert [error["field"] for error in response.json["errors"]] == ["to"]


def test_a_statement_of_one_day_is_still_a_statement(api, clock):
    alice = api.verified()
    api.money("/api/v1/topups", alice, amount=100, bank_card_id=alice["card_id"])
    day = clock.now().date().isoformat()  # the clock's start is at 16:00 in China Standard Time
    response = api.client.get(f"/api/v1/wallet/transactions?from={day}&to={day}", headers=alice["headers"])
    assert response.status_code == 200 and [line["amount"] for line in response.json["data"]] == [100]
