"""What the payee of a payment to a phone number sees of it: the note the payer wrote is the payment's reason, and
both sides' statements (JSON and CSV) show it (found by the funds audit: the note was stored and shown to no one)."""

import csv
import io

import pytest


def _pay(api, payer, payee, amount, note=None):
    body = {"amount": amount, "to_phone": payee["phone"]}
    if note is not None:
        body["note"] = note
    response = api.money("/api/v1/transfers", payer, **body)
    assert response.status_code == 201, response.json
    return response.json


def test_the_payee_and_the_payer_see_the_note_of_a_payment_in_their_statements(api):
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"])
    _pay(api, alice, bob, 199, note="rent for March")
    _pay(api, alice, bob, 100)
    received = api.client.get("/api/v1/wallet/transactions", headers=bob["headers"]).json["data"]
    assert [(line["amount"], line["note"]) for line in received] == [(100, None), (199, "rent for March")]
    sent = api.client.get("/api/v1/wallet/transactions", headers=alice["headers"]).json["data"]
    assert [(line["kind"], line["note"]) for line in sent] == [
        ("payment", None), ("payment", "rent for March"), ("topup", None)]


@pytest.mark.parametrize("note, shown", [
    ("dinner, \"the good one\"\nthanks", "dinner, \"the good one\"\nthanks"),
    ("=HYPERLINK(\"http://example.invalid\",\"refund\")", "'=HYPERLINK(\"http://example.invalid\",\"refund\")"),
    ("+1 lunch", "'+1 lunch"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("-2+3", "'-2+3"),
])
def test_the_csv_statement_shows_the_note_quoted_and_never_as_a_spreadsheet_formula(api, note, shown):
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"])
    paid = _pay(api, alice, bob, 250, note=note)
    text = api.client.get("/api/v1/wallet/transactions?format=csv", headers=bob["headers"]).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["id", "created_at", "kind", "amount", "balance_after", "currency", "counterparty",
                             "transfer_id", "note"]
    assert [(row["transfer_id"], row["amount"], row["note"]) for row in rows] == [(paid["id"], "250", shown)]
