"""Real answers of (nearly) every operation, successes and errors, match what the served OpenAPI document promises
for their status (the header a replay answers with included); every success status an operation answers is
documented; and two conventions of DESIGN 7 that an audit found broken: a replayed trade opening answers the first
answer, and the header it takes is documented."""

from __future__ import annotations

from tests.api.answer_schemas import document, schema_errors
from tests.api.escrow_helpers import grant_staff
from tests.api.test_escrow_stories import PP, act, open_trade
from tests.factories import LOGIN_PASSWORD


def test_every_answer_matches_its_documented_schema(api, app, people):
    doc = document(api.client)
    buyer, seller = people
    staff = grant_staff(api, app)
    problems: list[str] = []

    def check(method, path, response):
        problems.extend(schema_errors(doc, method, path, response))
        return response

    c = api.client
    h = buyer["headers"]
    check("GET", "/api/v1/me", c.get("/api/v1/me", headers=h))
    check("PATCH", "/api/v1/me", c.patch("/api/v1/me", headers=h, json={"locale": "zh"}))
    check("GET", "/api/v1/devices", c.get("/api/v1/devices", headers=h))
    check("GET", "/api/v1/me/identity", c.get("/api/v1/me/identity", headers=h))
    check("GET", "/api/v1/me/bank-cards", c.get("/api/v1/me/bank-cards", headers=h))
    check("GET", "/api/v1/wallet", c.get("/api/v1/wallet", headers=h))
    check("GET", "/api/v1/wallet/transactions", c.get("/api/v1/wallet/transactions", headers=h))
    check("GET", "/api/v1/me/alerts", c.get("/api/v1/me/alerts", headers=h))
    check("POST", "/api/v1/topups", api.money("/api/v1/topups", buyer, amount=100, bank_card_id=buyer["card_id"]))
    w = check("POST", "/api/v1/withdrawals",
              api.money("/api/v1/withdrawals", buyer, amount=100, bank_card_id=buyer["card_id"]))
    check("GET", f"/api/v1/withdrawals/{w.json['id']}", c.get(f"/api/v1/withdrawals/{w.json['id']}", headers=h))
    check("POST", "/api/v1/transfers", api.money("/api/v1/transfers", buyer, amount=100, to_phone=seller["phone"]))
    check("POST", "/api/v1/me/payment-password/verify",
          c.post("/api/v1/me/payment-password/verify", headers=h, json=PP))
    check("POST", "/api/v1/me/totp", c.post("/api/v1/me/totp", headers=h,
                                                json={"login_password": LOGIN_PASSWORD}))
    trade_id = open_trade(api, buyer, seller)
    check("GET", "/api/v1/trades", c.get("/api/v1/trades", headers=h))
    check("GET", f"/api/v1/trades/{trade_id}", c.get(f"/api/v1/trades/{trade_id}", headers=h))
    check("POST", f"/api/v1/trades/{trade_id}/pay", act(api, buyer, trade_id, "pay", key="p1", **PP))
    replayed = check("POST", f"/api/v1/trades/{trade_id}/pay", act(api, buyer, trade_id, "pay", key="p1", **PP))
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    check("POST", f"/api/v1/trades/{trade_id}/ship",
          act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1"))
    r = check("POST", f"/api/v1/trades/{trade_id}/refunds",
              act(api, buyer, trade_id, "refunds", amount=100, reason="broken", return_goods=False))
    rid = r.json["id"]
    check("POST", f"/api/v1/trades/{trade_id}/refunds/{rid}/refuse",
          act(api, seller, trade_id, f"refunds/{rid}/refuse", reason="no"))
    d = check("POST", f"/api/v1/trades/{trade_id}/disputes", act(api, buyer, trade_id, "disputes", reason="help"))
    check("POST", f"/api/v1/trades/{trade_id}/evidence",
          act(api, buyer, trade_id, "evidence", text="photo", attachments=[{"name": "a.jpg", "sha256": "0" * 64}]))
    check("GET", f"/api/v1/trades/{trade_id}/timeline", c.get(f"/api/v1/trades/{trade_id}/timeline", headers=h))
    check("GET", f"/api/v1/trades/{trade_id}/evidence-bundle",
          c.get(f"/api/v1/trades/{trade_id}/evidence-bundle", headers=h))
    sh = staff["headers"]
    check("GET", "/api/v1/admin/disputes", c.get("/api/v1/admin/disputes", headers=sh))
    check("GET", f"/api/v1/trades/{trade_id}", c.get(f"/api/v1/trades/{trade_id}", headers=sh))
    check("POST", f"/api/v1/admin/disputes/{d.json['id']}/decide",
          c.post(f"/api/v1/admin/disputes/{d.json['id']}/decide", headers=sh,
                 json={"outcome": "release", "reason": "ok"}))
    check("POST", f"/api/v1/trades/{trade_id}/ratings", act(api, buyer, trade_id, "ratings", score=1))
    check("GET", f"/api/v1/users/{seller['user']['id']}/reputation",
          c.get(f"/api/v1/users/{seller['user']['id']}/reputation", headers=h))
    # errors
    check("GET", "/api/v1/trades/trd_nope", c.get("/api/v1/trades/trd_nope", headers=h))
    check("POST", "/api/v1/topups", c.post("/api/v1/topups", headers=h, json={}))
    check("POST", "/api/v1/topups", c.post("/api/v1/topups", headers=h, data="x", content_type="text/plain"))
    check("POST", "/api/v1/sessions", api.login(seller["phone"], password="wrong password here"))
    check("POST", "/api/v1/sessions/refresh",
          c.post("/api/v1/sessions/refresh", json={"refresh_token": buyer["refresh_token"], "device_id": "phone-1"}))
    check("POST", "/api/v1/sms-codes", c.post("/api/v1/sms-codes", json={"phone": buyer["phone"], "purpose": "login"}))
    assert not problems, "\n".join(problems)


def test_the_reputation_of_a_user_who_does_not_exist_is_a_404(api):
    """It answered 200 with a zero score for any string: a mistyped seller looked like a new one."""
    account = api.register()
    response = api.client.get("/api/v1/users/usr_doesnotexist/reputation", headers=account["headers"])
    assert response.status_code == 404, (response.status_code, response.json)
    assert response.mimetype == "application/problem+json" and response.json["code"] == "not_found"


def test_every_success_status_an_operation_answers_is_documented(api):
    """POST /me/identity answers 201 the first time and 200 on a repeat; the document listed only 201."""
    from tests.factories_ids import make_id_number

    account = api.register()
    doc = document(api.client)
    body = {"real_name": "张三", "id_number": make_id_number()}
    first = api.client.post("/api/v1/me/identity", headers=account["headers"], json=body)
    assert first.status_code == 201, first.json
    repeat = api.client.post("/api/v1/me/identity", headers=account["headers"], json=body)
    assert repeat.status_code == 200, repeat.json
    assert not schema_errors(doc, "POST", "/api/v1/me/identity", repeat)


def _open(api, buyer, seller, key):
    return api.client.post("/api/v1/trades", headers={**buyer["headers"], "Idempotency-Key": key},
                           json={"seller_phone": seller["phone"], "title": "bike", "amount": 1000})


def test_a_replayed_trade_opening_answers_the_first_answer_not_the_trade_as_it_is_now(api, people):
    """It stored only the trade's id and answered a replay with the trade as it was then (paid, other deadlines)."""
    buyer, seller = people
    first = _open(api, buyer, seller, "open-1")
    assert first.status_code == 201 and first.json["status"] == "WAIT_BUYER_PAY"
    trade_id = first.json["id"]
    assert act(api, buyer, trade_id, "pay", key="pay-1", **PP).status_code == 200

    again = _open(api, buyer, seller, "open-1")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.status_code == first.status_code
    assert again.get_data() == first.get_data(), (
        f"replay differs from the first answer: status {first.json['status']} -> {again.json['status']}")


def test_the_optional_idempotency_key_of_opening_a_trade_is_documented(api):

    doc = document(api.client)
    refund_step = doc["paths"]["/api/v1/trades/{trade_id}/refunds/{refund_id}/agree"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in refund_step["parameters"])  # the convention exists
    open_trade = doc["paths"]["/api/v1/trades"]["post"]
    names = [(p["in"], p["name"]) for p in open_trade["parameters"]]
    assert ("header", "Idempotency-Key") in names, names
