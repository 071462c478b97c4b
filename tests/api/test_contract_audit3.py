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
            header = operation["responses"]["default"]["headers"].get("WWW-Authenticate")
            assert header is not None and "invalid_token" in header["description"], f"{method} {path}"
