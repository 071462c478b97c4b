"""What the CSV statement holds, as the document says it: every line the filters select (``limit`` and
``starting_after`` page only the JSON), its columns, amounts in fen and times in UTC. The document said only
"format: json or csv", and not what unit a statement's amounts are in (found by the funds audit)."""

import csv
import io


def test_the_document_describes_the_csv_statement_and_the_unit_of_its_amounts(api):
    from tests.api.answer_schemas import document

    doc = document(api.client)
    params = {p["name"]: p for p in doc["paths"]["/api/v1/wallet/transactions"]["get"]["parameters"]}
    described = params["format"]["schema"].get("description", "")
    for words in ("limit", "starting_after", "fen", "UTC", "id, created_at, kind, amount, balance_after, currency,"
                  " counterparty, transfer_id, note"):
        assert words in described, words
    line = doc["components"]["schemas"]["StatementLine"]["properties"]
    assert "fen" in line["amount"]["description"] and "fen" in line["balance_after"].get("description", "")


def test_the_csv_statement_is_every_line_the_filters_select_whatever_the_page_parameters(api):
    alice, bob = api.verified(), api.register()
    api.money("/api/v1/topups", alice, amount=10000, bank_card_id=alice["card_id"])
    for amount in (100, 200, 300):
        api.money("/api/v1/transfers", alice, amount=amount, to_phone=bob["phone"])
    first = api.client.get("/api/v1/wallet/transactions?limit=1", headers=alice["headers"]).json
    text = api.client.get(f"/api/v1/wallet/transactions?format=csv&limit=1&kind=payment"
                          f"&starting_after={first['data'][0]['id']}", headers=alice["headers"]).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(row["amount"], row["balance_after"]) for row in rows] == [("-300", "9400"), ("-200", "9700"),
                                                                       ("-100", "9900")]
