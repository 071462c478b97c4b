"""The challenge of a 401 says error="invalid_token" only when the access token sent is what was refused (RFC 6750 3.1).
Found by the review: a refresh whose refresh token was refused, sent (as client libraries do on every request) with an
access token that is still good, was answered as if that access token were invalid."""

from __future__ import annotations


def test_a_refused_refresh_token_does_not_call_the_access_token_sent_with_it_invalid(api):
    account = api.register()
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 200
    refused = api.client.post("/api/v1/sessions/refresh", headers=account["headers"],
                              json={"refresh_token": "not-a-token-we-issued", "device_id": "phone-1"})
    assert refused.status_code == 401, refused.json
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="wallet"'
    # The access token it carried still works: nothing about it was refused.
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 200
