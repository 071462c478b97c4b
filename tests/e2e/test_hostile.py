"""Hostile input against a live server over real HTTP: zero 5xx, zero leaks of another user's data.

(schemathesis also runs over the whole API in CI, .ci/schemathesis.sh; these are the hand-written cases.)
"""

import json
import re
import time
import uuid

import pytest
import requests

from tests.e2e.server import DevServer
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.factories_ids import make_card_number, make_id_number

pytestmark = pytest.mark.e2e


class Live:
    def __init__(self, server: DevServer) -> None:
        self.server, self.http = server, requests.Session()
        self.answers: list[requests.Response] = []

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.http.request(method, self.server.url + path, headers=headers, timeout=30, **kwargs)
        self.answers.append(response)
        return response

    def code(self, phone: str) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.server.sms_file.exists():
                for line in reversed(self.server.sms_file.read_text(encoding="utf-8").splitlines()):
                    message = json.loads(line)
                    if message["to"] == phone and message["event"] == "sms_code":
                        return re.search(r"(?<!\d)\d{6}(?!\d)", message["body"]).group()
            time.sleep(0.1)
        raise AssertionError(f"no code for {phone}")

    def user(self, name: str) -> dict:
        phone = make_phone()
        self.call("POST", "/api/v1/sms-codes", json={"phone": phone, "purpose": "register"})
        registered = self.call("POST", "/api/v1/users", json={
            "phone": phone, "sms_code": self.code(phone), "login_password": LOGIN_PASSWORD,
            "payment_password": PAYMENT_PASSWORD, "device_id": "d1"}).json()
        token = registered["access_token"]
        self.call("POST", "/api/v1/me/identity", token, json={"real_name": name, "id_number": make_id_number()})
        card = self.call("POST", "/api/v1/me/bank-cards", token, json={
            "card_number": make_card_number(), "holder_name": name, "bank_code": "ICBC",
            "payment_password": PAYMENT_PASSWORD}).json()
        self.call("POST", "/api/v1/topups", token, headers={"Idempotency-Key": uuid.uuid4().hex},
                  json={"amount": 100000, "bank_card_id": card["id"], "payment_password": PAYMENT_PASSWORD})
        return {"phone": phone, "token": token, "id": registered["user"]["id"], "card": card["id"]}


HOSTILE_STRINGS = [
    "'; DROP TABLE users; --", "\" OR 1=1 --", "<script>alert(1)</script>", "${jndi:ldap://x}", "../../etc/passwd",
    "\u0000", "𝕁ohn 🙂 \u202egnp.exe", "长" * 129, "%s%s%n", "\ud83d",
]
HOSTILE_AMOUNTS = [10**30, -1, 0, 1.5, 1e309, "100", None, [], {"amount": 1}, True, -0.0, 2**63]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with DevServer(tmp_path_factory.mktemp("hostile"), env={"RATELIMIT_ENABLED": "false"}) as server:
        yield Live(server)


@pytest.fixture(scope="module")
def alice(live):
    return live.user("张三")


@pytest.fixture(scope="module")
def bob(live):
    return live.user("李四")


def no_server_errors(live):
    bad = [(r.request.method, r.request.url, r.status_code, r.text[:200]) for r in live.answers if r.status_code >= 500]
    assert bad == []
    log = live.server.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log


@pytest.mark.parametrize("text", HOSTILE_STRINGS)
def test_hostile_strings_in_every_text_field(live, alice, bob, text):
    token = alice["token"]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    raw = text.encode("utf-8", "surrogatepass")  # URLs carry bytes; a lone surrogate is not valid UTF-8
    answers = [
        live.call("POST", "/api/v1/sms-codes", json={"phone": text, "purpose": "register"}),
        live.call("POST", "/api/v1/sessions", json={"phone": text, "login_password": text, "device_id": text}),
        live.call("POST", "/api/v1/trades", token, json={"seller_phone": bob["phone"], "title": text, "amount": 100}),
        live.call("POST", "/api/v1/transfers", token, headers=key,
                  json={"to_phone": text, "amount": 1, "payment_password": PAYMENT_PASSWORD}),
        live.call("POST", "/api/v1/transfers", token, headers={"Idempotency-Key": uuid.uuid4().hex},
                  json={"to_phone": bob["phone"], "amount": 1, "note": text, "payment_password": PAYMENT_PASSWORD}),
        live.call("POST", "/api/v1/me/identity", token, json={"real_name": text, "id_number": text}),
        live.call("PATCH", "/api/v1/me", token, json={"email": text, "login_password": LOGIN_PASSWORD}),
        live.call("GET", f"/api/v1/trades/{requests.utils.quote(raw, safe='')}", token),
        live.call("GET", "/api/v1/wallet/transactions", token, params={"starting_after": raw, "kind": raw}),
    ]
    for response in answers:
        assert response.status_code < 500, (response.request.url, response.text[:300])
        assert response.headers["Content-Type"].startswith(("application/json", "application/problem+json"))
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    created = answers[2]
    if created.status_code == 201:  # a script fragment is just a title, returned as JSON data
        assert created.json()["title"] == text


@pytest.mark.parametrize("amount", HOSTILE_AMOUNTS, ids=repr)
def test_hostile_amounts_are_refused_with_a_code(live, alice, bob, amount):
    body = json.dumps({"to_phone": bob["phone"], "amount": amount, "payment_password": PAYMENT_PASSWORD})
    response = live.call("POST", "/api/v1/transfers", alice["token"], data=body,
                         headers={"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] in ("validation_failed", "malformed_request")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml", ""])
def test_wrong_content_types(live, content_type, alice):
    response = live.call("POST", "/api/v1/me/payment-password/verify", alice["token"], data=b"payment_password=1",
                         headers={"Content-Type": content_type})
    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"


def test_a_one_megabyte_body(live, alice):
    body = b'{"title": "' + b"x" * (1024 * 1024) + b'"}'
    response = live.call("POST", "/api/v1/trades", alice["token"], data=body,
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("token", ["", "x", "at_" + "A" * 43, "rt_" + "A" * 43, "Bearer", "null", "' OR 1=1 --"])
def test_missing_and_forged_tokens(live, token):
    for path in ("/api/v1/me", "/api/v1/wallet", "/api/v1/trades", "/api/v1/devices"):
        response = live.call("GET", path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and response.json()["code"] == "unauthenticated"


def test_another_users_ids_are_not_found_and_nothing_leaks(live, alice, bob):
    mallory = live.user("赵六")
    trade = live.call("POST", "/api/v1/trades", alice["token"],
                      json={"seller_phone": bob["phone"], "title": "private", "amount": 100}).json()
    withdrawal = live.call("POST", "/api/v1/withdrawals", alice["token"], headers={"Idempotency-Key": "w1"},
                           json={"amount": 100, "bank_card_id": alice["card"], "payment_password": PAYMENT_PASSWORD})
    alice_device = live.call("GET", "/api/v1/devices", alice["token"]).json()["data"][0]["id"]
    probes = [
        ("GET", f"/api/v1/trades/{trade['id']}", None),
        ("GET", f"/api/v1/trades/{trade['id']}/timeline", None),
        ("GET", f"/api/v1/trades/{trade['id']}/evidence-bundle", None),
        ("POST", f"/api/v1/trades/{trade['id']}/cancel", {}),
        ("GET", f"/api/v1/withdrawals/{withdrawal.json()['id']}", None),
        ("DELETE", f"/api/v1/me/bank-cards/{alice['card']}", None),
        ("DELETE", f"/api/v1/devices/{alice_device}", None),
    ]
    for method, path, body in probes:
        response = live.call(method, path, mallory["token"], json=body) if body is not None else \
            live.call(method, path, mallory["token"])
        assert response.status_code == 404, (path, response.text)
        assert alice["phone"] not in response.text and alice["id"] not in response.text
    topup = live.call("POST", "/api/v1/topups", mallory["token"], headers={"Idempotency-Key": uuid.uuid4().hex},
                      json={"amount": 100, "bank_card_id": alice["card"], "payment_password": PAYMENT_PASSWORD})
    assert topup.status_code == 404
    assert live.call("GET", "/api/v1/admin/disputes", mallory["token"]).status_code == 403
    listed = live.call("GET", "/api/v1/trades", mallory["token"]).json()["data"]
    assert listed == []
    statement = live.call("GET", "/api/v1/wallet/transactions", mallory["token"]).text
    assert alice["phone"] not in statement
    # alice's things are intact
    assert live.call("GET", f"/api/v1/trades/{trade['id']}", alice["token"]).json()["status"] == "WAIT_BUYER_PAY"
    assert len(live.call("GET", "/api/v1/me/bank-cards", alice["token"]).json()["data"]) == 1


def test_no_server_errors_in_the_whole_run(live, alice, bob):
    no_server_errors(live)
