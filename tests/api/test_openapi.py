"""The OpenAPI document is generated, complete and valid: every route under /api/v1 is in it with its method,
every operation documents its problem+json error answer, and the browsable page lists every path."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from core.api import REGISTRY

DOC = "/api/v1/openapi.json"
DOCS_PAGE = "/api/v1/docs"
UNDOCUMENTED = {DOC, DOCS_PAGE}  # the document and its page describe the API; they are not part of it
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # Werkzeug answers these for every rule
_RULE_PARAM = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


@pytest.fixture
def doc(client) -> dict[str, Any]:
    response = client.get(DOC)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.json


def routed_operations(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every Flask route under /api/v1, except the document and its page."""
    operations = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule in UNDOCUMENTED:
            continue
        path = _RULE_PARAM.sub(r"{\1}", rule.rule)
        operations |= {(method.lower(), path) for method in rule.methods - IGNORED_METHODS}
    return operations


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item}


def each_operation(doc: dict[str, Any]):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_the_document_is_openapi_3_1(doc):
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_every_route_under_api_v1_is_documented_with_its_method(app, doc):
    routed = routed_operations(app)
    assert routed, "no routes under /api/v1: the blueprints were not registered"
    missing = routed - documented_operations(doc)
    assert not missing, f"routes missing from {DOC}: {sorted(missing)}"


def test_a_route_added_without_the_endpoint_helper_is_reported_missing(app, client):
    app.add_url_rule("/api/v1/hand-written", "hand_written", lambda: "", methods=["POST"])
    documented = documented_operations(client.get(DOC).json)
    assert ("post", "/api/v1/hand-written") in routed_operations(app) - documented


def test_every_documented_operation_is_routed(app, doc):
    routed = routed_operations(app)
    routed |= {
        (method.lower(), rule.rule)
        for rule in app.url_map.iter_rules()
        if not rule.rule.startswith("/api/v1/")
        for method in rule.methods - IGNORED_METHODS
    }
    stale = documented_operations(doc) - routed
    assert not stale, f"{DOC} documents operations no route serves: {sorted(stale)}"


def test_the_document_and_its_page_are_not_operations(doc):
    assert DOC not in doc["paths"] and DOCS_PAGE not in doc["paths"]


def test_every_operation_documents_a_problem_json_default_response(doc):
    for name, operation in each_operation(doc):
        default = operation["responses"].get("default")
        assert default is not None, f"{name} has no default response"
        content = default.get("content", {})
        assert list(content) == ["application/problem+json"], f"{name}: default is not problem+json"
        assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}, name


def test_every_error_answer_documents_retry_after(doc):
    """429 and the 503s the client should retry (bank_unavailable, database_unavailable) send Retry-After; the document
    did not say so (found by the bank audit)."""
    for name, operation in each_operation(doc):
        header = operation["responses"]["default"].get("headers", {}).get("Retry-After")
        assert header is not None and "bank_unavailable" in header["description"], name
        assert header["schema"] == {"type": "integer", "minimum": 1}, name


def test_the_problem_schema_carries_a_stable_code_and_field_errors(doc):
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    assert "errors" in problem["properties"]


def test_every_operation_documents_exactly_the_success_answers_it_declares(doc):
    """One success status each, except where an endpoint declares others (POST /me/identity: 200 on a repeat)."""
    declared = {(ep.method, ep.path): {str(ep.status), *map(str, ep.extra_statuses)} for ep in REGISTRY}
    assert {(m, p) for m, p in declared if len(declared[(m, p)]) > 1} == {("post", "/api/v1/me/identity")}
    for name, operation in each_operation(doc):
        method, path = name.split(" ", 1)
        success = {code for code in operation["responses"] if code.startswith("2")}
        assert success == declared[(method.lower(), path)], f"{name}: success codes {success}"
        errors = {code for code in operation["responses"] if code != "default"} - success
        assert all(re.fullmatch(r"4\d\d|503", code) for code in errors), f"{name}: error codes {errors}"
        if "204" in success:
            assert "content" not in operation["responses"]["204"], f"{name}: a 204 has no body"


def test_operation_ids_are_unique(doc):
    ids = [operation["operationId"] for _name, operation in each_operation(doc)]
    assert len(ids) == len(set(ids))


def test_path_parameters_are_declared_and_required(doc):
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}: path parameters {declared} != {names}"
            assert all(p["required"] for p in operation["parameters"] if p["in"] == "path")


def test_request_bodies_are_json_and_public_operations_say_so(doc):
    for name, operation in each_operation(doc):
        if name == "POST /api/v1/notifications/twilio/status":  # Twilio posts a form (test_twilio_form_doc_audit3)
            assert list(operation["requestBody"]["content"]) == ["application/x-www-form-urlencoded"], name
        elif "requestBody" in operation:
            assert list(operation["requestBody"]["content"]) == ["application/json"], name
        assert operation["security"] in ([], [{"bearerAuth": []}]), name


def test_public_operations_are_the_ones_a_stranger_needs(doc):
    public = {name for name, operation in each_operation(doc) if operation["security"] == []}
    expected_public = {
        "POST /api/v1/sms-codes",
        "POST /api/v1/users",
        "POST /api/v1/sessions",
        "POST /api/v1/sessions/refresh",
        "POST /api/v1/password-resets",
    }
    assert expected_public <= public
    assert "GET /api/v1/me" not in public and "GET /api/v1/devices" not in public


def _refs(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves(doc):
    schemas = doc["components"]["schemas"]
    for ref in set(_refs(doc)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, f"dangling {ref}"


def test_the_document_validates_against_the_openapi_3_1_meta_schema(doc):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    validator = jsonschema_rs.validator_for(definitions.OPENAPI_31)
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors[:20])


def test_every_component_schema_is_valid_json_schema_2020_12(doc):
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    for name, schema in doc["components"]["schemas"].items():
        try:
            jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
        except jsonschema_rs.ValidationError as exc:
            pytest.fail(f"components.schemas.{name} is not valid JSON Schema: {exc}")


def test_the_docs_page_renders_and_lists_every_operation(client, doc):
    response = client.get(DOCS_PAGE)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert DOC in page, "the page links the machine-readable document"
    rows = page.split("<tr>")[1:]
    for path, item in doc["paths"].items():
        for method in item:
            listed = any(f">{method.upper()}<" in row and f">{html.escape(path)}<" in row for row in rows)
            assert listed, f"{method.upper()} {path} is missing from the docs page"


def test_the_document_and_page_need_no_token_and_are_not_cached(client):
    for url in (DOC, DOCS_PAGE):
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_idempotency_key_tells_a_client_what_a_retry_with_it_gets(doc):
    """What a retry with the same key gets is a mobile client's whole retry policy: a success replayed, a reuse
    refused, an error answer that keeps nothing (the same key runs again once the cause is fixed), the bank's refusal
    of a card that does keep (found by the idempotency audit: the document said only "retries with the same key
    replay the first answer", which an error answer is not), and the payment password checked on a replay too."""
    described = 0
    for name, operation in each_operation(doc):
        for parameter in operation["parameters"]:
            if parameter["name"] == "Idempotency-Key":
                described += 1
                for needed in ("Idempotent-Replayed", "idempotency_key_reused", "keeps nothing", "bank_declined",
                               "payment password", "24 hours"):
                    assert needed in parameter["description"], (name, needed)
    assert described >= 8  # top-up, withdrawal, transfer, pay, confirm; open a trade, agree, receive the return


def _links(doc: dict[str, Any]):
    """(creator, status, link name, link) for every link the document declares."""
    for name, operation in each_operation(doc):
        for status, answer in operation["responses"].items():
            for link_name, link in answer.get("links", {}).items():
                yield name, status, link_name, link


def test_links_name_real_operations_and_give_each_every_path_parameter(doc):
    by_id = {operation["operationId"]: (name, operation) for name, operation in each_operation(doc)}
    links = list(_links(doc))
    creators = {creator for creator, *_ in links}
    assert {"POST /api/v1/trades", "POST /api/v1/trades/{trade_id}/refunds", "POST /api/v1/me/bank-cards",
            "POST /api/v1/withdrawals"} <= creators
    for creator, status, _name, link in links:
        target, operation = by_id[link["operationId"]]
        needed = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert set(link["parameters"]) == needed, f"{creator} -> {target}"
        assert status in ("201", "202") and "$response.body#/id" in link["parameters"].values()
        creator_path = creator.split(" ", 1)[1]
        assert target.split(" ", 1)[1].startswith(creator_path + "/{"), f"{creator} -> {target}"
    trade_targets = {by_id[link["operationId"]][0] for creator, _s, _n, link in links
                     if creator == "POST /api/v1/trades"}
    assert {"GET /api/v1/trades/{trade_id}", "POST /api/v1/trades/{trade_id}/pay",
            "POST /api/v1/trades/{trade_id}/ship"} <= trade_targets
    assert not any("{refund_id}" in target for target in trade_targets)  # a trade's answer gives no refund id


def _from_answer(expression: str, answer: dict[str, Any]) -> str:
    """A link's ``$response.body#/...`` expression, evaluated on the creating answer."""
    assert expression.startswith("$response.body#/"), expression
    return answer[expression.removeprefix("$response.body#/")]


def test_every_read_a_new_trade_links_to_answers_with_that_trade(api, doc, people):
    """Followed as a client would follow them, with the new trade's answer: each linked read reaches the trade."""
    buyer, seller = people
    opened = api.client.post("/api/v1/trades", headers=buyer["headers"], json={
        "seller_phone": seller["phone"], "title": "A lamp", "amount": 5000})
    assert opened.status_code == 201
    by_id = {operation["operationId"]: name for name, operation in each_operation(doc)}
    reads = [(by_id[link["operationId"]], link) for creator, _s, _n, link in _links(doc)
             if creator == "POST /api/v1/trades" and by_id[link["operationId"]].startswith("GET ")]
    assert len(reads) == 3  # the trade, its timeline, its evidence bundle
    for target, link in reads:
        path = target.split(" ", 1)[1]
        for name, expression in link["parameters"].items():
            path = path.replace("{" + name + "}", _from_answer(expression, opened.json))
        assert api.client.get(path, headers=buyer["headers"]).status_code == 200, target
        # The id the link took from the answer is what found the trade: another id finds nothing.
        elsewhere = path.replace(opened.json["id"], "trd_" + "0" * 26)
        assert api.client.get(elsewhere, headers=buyer["headers"]).status_code == 404, target
