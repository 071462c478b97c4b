"""An answer that creates a resource names it in ``Location`` (RFC 9110 15.3.2; for the 202 of a withdrawal, the
status monitor of 15.3.3) wherever the API has a GET of it, the retry of a request under the same Idempotency-Key
names the same one, and the OpenAPI document says so. Found by the followups audit: no 201 or 202 carried one, so a
client had to know each path by heart to follow what it had just made."""

from __future__ import annotations

import pytest

from tests.api.answer_schemas import document
from tests.api.test_escrow_stories import people  # noqa: F401 - fixture
from tests.factories_ids import make_id_number

OPEN = {"title": "A second-hand bicycle", "amount": 19900}


def followed(api, who, response, expected: str) -> dict:
    """The resource ``response`` names in its Location, read back: the one the answer describes."""
    location = response.headers.get("Location")
    assert location == expected, response.headers
    read = api.client.get(location, headers=who["headers"])
    assert read.status_code == 200, read.json
    return read.json


def test_an_opened_trade_is_named_by_its_location_also_on_a_replay(api, people):  # noqa: F811
    buyer, seller = people
    headers = {**buyer["headers"], "Idempotency-Key": "open-1"}
    opened = api.client.post("/api/v1/trades", headers=headers, json={"seller_phone": seller["phone"], **OPEN})
    assert opened.status_code == 201, opened.json
    assert followed(api, buyer, opened, f"/api/v1/trades/{opened.json['id']}")["id"] == opened.json["id"]
    replayed = api.client.post("/api/v1/trades", headers=headers, json={"seller_phone": seller["phone"], **OPEN})
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.headers.get("Location") == opened.headers["Location"]
    unkeyed = api.client.post("/api/v1/trades", headers=buyer["headers"],
                              json={"seller_phone": seller["phone"], **OPEN})
    assert unkeyed.headers.get("Location") == f"/api/v1/trades/{unkeyed.json['id']}"


def test_a_requested_withdrawal_is_named_by_its_location_also_on_a_replay(api, people):  # noqa: F811
    buyer, _seller = people
    asked = api.money("/api/v1/withdrawals", buyer, key="w-1", amount=100, bank_card_id=buyer["card_id"])
    assert asked.status_code == 202, asked.json
    assert followed(api, buyer, asked, f"/api/v1/withdrawals/{asked.json['id']}")["id"] == asked.json["id"]
    replayed = api.money("/api/v1/withdrawals", buyer, key="w-1", amount=100, bank_card_id=buyer["card_id"])
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.headers.get("Location") == asked.headers["Location"]


def test_a_verified_identity_is_named_by_its_location(api):
    account = api.register()
    body = {"real_name": "张三", "id_number": make_id_number()}
    verified = api.client.post("/api/v1/me/identity", headers=account["headers"], json=body)
    assert verified.status_code == 201, verified.json
    assert followed(api, account, verified, "/api/v1/me/identity")["verified"] is True


@pytest.mark.parametrize(("path", "status"), [("/api/v1/trades", "201"), ("/api/v1/withdrawals", "202"),
                                              ("/api/v1/me/identity", "201")])
def test_the_document_names_the_location_of_what_an_operation_creates(api, path, status):
    answer = document(api.client)["paths"][path]["post"]["responses"][status]
    assert "Location" in answer.get("headers", {}), answer
