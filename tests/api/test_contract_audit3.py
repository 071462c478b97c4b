"""The HTTP contract as a client library meets it (found by the contract audit)."""

from __future__ import annotations

from tests.factories import make_phone


def _challenge(response) -> str:
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True))
    return response.headers.get("WWW-Authenticate", "")


def test_every_401_answer_carries_a_bearer_challenge(api):
    """RFC 9110 15.5.2: a 401 answer MUST send WWW-Authenticate (RFC 6750 3: "Bearer" for a bearer-token API). None
    did: HTTP stacks that go by the challenge (Android's HttpURLConnection: "No authentication challenges found")
    fail on the answer instead of handing the client its problem+json."""
    account = api.register()
    c = api.client
    no_token = c.get("/api/v1/me")
    assert _challenge(no_token).startswith("Bearer ")
    wrong_scheme = c.get("/api/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert _challenge(wrong_scheme).startswith("Bearer ")
    # A token that names no session is an invalid token (RFC 6750 3.1).
    unknown = c.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token-we-issued"})
    assert _challenge(unknown).startswith("Bearer ") and 'error="invalid_token"' in _challenge(unknown)
    refresh = c.post("/api/v1/sessions/refresh", json={"refresh_token": "spent", "device_id": "phone-1"})
    assert _challenge(refresh).startswith("Bearer ")
    # A wrong password, for a real account and for a number without one: the same challenge (DESIGN 4.2: alike).
    wrong = api.login(account["phone"], password="not the password at all")
    stranger = api.login(make_phone(), password="not the password at all")
    assert _challenge(wrong).startswith("Bearer ") and _challenge(wrong) == _challenge(stranger)
    # Other answers carry none.
    assert "WWW-Authenticate" not in c.get("/api/v1/me", headers=account["headers"]).headers


def test_the_document_describes_the_challenge_of_a_401(client):
    for path, item in client.get("/api/v1/openapi.json").json["paths"].items():
        for method, operation in item.items():
            if "401" not in operation["responses"]:
                assert not operation["security"], f"{method} {path}: authenticated, yet no 401 documented"
                continue
            header = operation["responses"]["401"]["headers"].get("WWW-Authenticate")
            assert header is not None and "invalid_token" in header["description"], f"{method} {path}"


def _property(doc, model, name):
    return doc["components"]["schemas"][model]["properties"][name]


def test_the_document_lists_the_states_a_client_codes_against(client):
    """Trades, refunds, disputes and alerts answered ``status`` as any string: a client generated from the document
    could not know WAIT_BUYER_PAY from TRADE_CLOSED (DESIGN 6), nor which refund states are still open."""
    from notifications.models import STATUSES
    from wallet.escrow import REFUND_STATES, TRADE_STATES

    doc = client.get("/api/v1/openapi.json").json
    assert _property(doc, "TradeOut", "status")["enum"] == list(TRADE_STATES)
    assert _property(doc, "RefundOut", "status")["enum"] == list(REFUND_STATES)
    assert _property(doc, "DisputeOut", "status")["enum"] == ["open", "decided"]
    assert set(_property(doc, "DisputeOut", "outcome")["enum"]) == {"release", "refund", "split", None}
    assert _property(doc, "AlertOut", "status")["enum"] == list(STATUSES)


def test_answers_in_every_state_match_the_listed_states(api, people):
    """The states the answers carry are the listed ones (the schema check of every answer holds them to it)."""
    from tests.api.answer_schemas import document, schema_errors
    from tests.api.test_escrow_stories import PP, act, open_trade

    buyer, seller = people
    doc = document(api.client)
    trade_id = open_trade(api, buyer, seller)
    answers = [("POST", f"/api/v1/trades/{trade_id}/pay", act(api, buyer, trade_id, "pay", key="p", **PP)),
               ("POST", f"/api/v1/trades/{trade_id}/ship",
                act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1"))]
    refund = act(api, buyer, trade_id, "refunds", amount=100, reason="scratched", return_goods=False)
    answers.append(("POST", f"/api/v1/trades/{trade_id}/refunds", refund))
    answers.append(("POST", f"/api/v1/trades/{trade_id}/refunds/{refund.json['id']}/refuse",
                    act(api, seller, trade_id, f"refunds/{refund.json['id']}/refuse", reason="no")))
    answers.append(("GET", f"/api/v1/trades/{trade_id}", api.client.get(f"/api/v1/trades/{trade_id}",
                                                                         headers=buyer["headers"])))
    answers.append(("GET", "/api/v1/me/alerts", api.client.get("/api/v1/me/alerts", headers=buyer["headers"])))
    problems = [problem for method, path, response in answers for problem in schema_errors(doc, method, path, response)]
    assert not problems, problems
    assert [r.status_code for _m, _p, r in answers] == [200, 200, 201, 200, 200, 200]


def test_a_step_that_takes_no_fields_can_be_posted_without_a_body(api, people):
    """Cancelling, extending and withdrawing a refund take nothing (DESIGN 7.1 lists them without a body), yet a POST
    without one, as a client's bodiless POST sends it, was 415 unsupported_media_type: only ``{}`` sent as JSON went
    through. Without a body each now does what it does with ``{}``, and the document says the body is optional."""
    from tests.api.test_escrow_stories import PP, act, open_trade, paid_and_shipped

    buyer, seller = people
    c, h = api.client, buyer["headers"]
    trade_id = open_trade(api, buyer, seller)
    cancelled = c.post(f"/api/v1/trades/{trade_id}/cancel", headers=h)
    assert (cancelled.status_code, cancelled.json["status"]) == (200, "TRADE_CLOSED"), cancelled.json
    trade_id = paid_and_shipped(api, buyer, seller)
    extended = c.post(f"/api/v1/trades/{trade_id}/extend", headers=h)
    assert (extended.status_code, extended.json["extended"]) == (200, True), extended.json
    refund = act(api, buyer, trade_id, "refunds", amount=100, reason="scratched")
    withdrawn = c.post(f"/api/v1/trades/{trade_id}/refunds/{refund.json['id']}/withdraw", headers=h,
                       content_type="application/json")  # announced as JSON, and empty
    assert (withdrawn.status_code, withdrawn.json["status"]) == (200, "REFUND_CLOSED"), withdrawn.json
    # A body is still judged: a field these steps do not take is refused, and so is a body that is not JSON.
    again = c.post(f"/api/v1/trades/{trade_id}/extend", headers=h, json={"days": 30})
    assert (again.status_code, again.json["code"]) == (422, "validation_failed")
    form = c.post(f"/api/v1/trades/{trade_id}/extend", headers=h, data="days=30",
                  content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    # A step that takes fields still needs its body.
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).status_code == 200
    assert c.post(f"/api/v1/trades/{trade_id}/ratings", headers=h).status_code == 415

    doc = api.client.get("/api/v1/openapi.json").json
    for step in ("cancel", "extend", "refunds/{refund_id}/withdraw"):
        assert doc["paths"][f"/api/v1/trades/{{trade_id}}/{step}"]["post"]["requestBody"]["required"] is False
    assert doc["paths"]["/api/v1/trades/{trade_id}/ratings"]["post"]["requestBody"]["required"] is True


def test_the_problem_schema_describes_the_members_a_client_acts_on(api, clock):
    """A wrong password says ``attempts_left``, a lock ``locked_until`` (DESIGN 4.2), a hold ``available_at``, a freeze
    ``frozen_at``: what a client shows or waits for. The document's Problem named none of them."""
    from tests.api.answer_schemas import document, schema_errors

    doc = document(api.client)
    members = doc["components"]["schemas"]["Problem"]["properties"]
    for name in ("attempts_left", "locked_until", "hard_locked", "available_at", "reason", "frozen_at", "available",
                 "topup_id"):
        assert name in members and members[name].get("description"), name
    account = api.register()
    answers = [api.login(account["phone"], password="not the password at all") for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 423]
    assert answers[0].json["attempts_left"] == 2 and answers[2].json["locked_until"]
    for answer in answers:
        assert not schema_errors(doc, "POST", "/api/v1/sessions", answer)
