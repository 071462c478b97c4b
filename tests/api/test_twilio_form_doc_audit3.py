"""The OpenAPI document describes the body Twilio posts to ``POST /api/v1/notifications/twilio/status``: a form
(``application/x-www-form-urlencoded``), the fields of it we read. Found by the followups audit: the document named no
request body at all for it (it could say only JSON ones), so a reader, or schemathesis, saw an operation that takes
nothing."""

from __future__ import annotations

import jsonschema_rs

from tests.api.answer_schemas import document

PATH = "/api/v1/notifications/twilio/status"
FORM = "application/x-www-form-urlencoded"


def form_schema(client) -> tuple[dict, dict]:
    doc = document(client)
    body = doc["paths"][PATH]["post"].get("requestBody")
    assert body is not None, "no request body documented"
    assert body["required"] is True
    assert list(body["content"]) == [FORM], body
    return body["content"][FORM]["schema"], doc


def resolved(schema: dict, doc: dict) -> dict:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_the_delivery_report_documents_its_form_with_the_fields_we_read(client):
    schema, doc = form_schema(client)
    model = resolved(schema, doc)
    assert {"MessageSid", "MessageStatus", "ErrorCode", "AccountSid"} <= set(model["properties"]), model
    assert set(model["required"]) == {"MessageSid", "MessageStatus"}
    assert model.get("additionalProperties") is not False  # Twilio sends more, which we ignore


def test_a_report_as_twilio_sends_it_matches_the_documented_form(client):
    schema, doc = form_schema(client)
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})
    report = {"MessageSid": "SM" + "0123456789abcdef" * 2, "SmsSid": "SM" + "0123456789abcdef" * 2,
              "MessageStatus": "undelivered", "ErrorCode": 30003, "AccountSid": "AC" + "a" * 32,
              "To": "+12025550100", "ApiVersion": "2010-04-01"}
    assert list(validator.iter_errors(report)) == []
    assert list(validator.iter_errors({"MessageStatus": "delivered"})) != []  # no MessageSid: refused
