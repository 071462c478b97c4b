"""A refused movement over a limit says the limit in fen (``limit``); the document's Problem named every other member
a client acts on but not that one (found by the funds audit)."""


def test_limit_exceeded_carries_the_limit_and_the_document_describes_it(api, app):
    from tests.api.answer_schemas import document, schema_errors

    app.config.update(LIMIT_PER_TRANSACTION=6000, LIMIT_DAILY=10000)
    alice, bob = api.verified(), api.register()
    assert api.money("/api/v1/topups", alice, amount=6000, bank_card_id=alice["card_id"]).status_code == 201
    single = api.money("/api/v1/transfers", alice, amount=6001, to_phone=bob["phone"])
    assert (single.status_code, single.json["code"], single.json["limit"]) == (422, "limit_exceeded", 6000)
    doc = document(api.client)
    member = doc["components"]["schemas"]["Problem"]["properties"].get("limit")
    assert member is not None and "limit_exceeded" in member.get("description", "")
    assert "integer" in str(member)
    assert not schema_errors(doc, "POST", "/api/v1/transfers", single)
