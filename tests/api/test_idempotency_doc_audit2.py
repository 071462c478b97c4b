"""The OpenAPI document's Idempotency-Key rules (core.openapi) against what a retry gets (wallet.guarded, README
"Money requests"). Found by the idempotency audit: the document said a replay is "423 while it is locked", and said
nothing of a frozen account, while since 1137465 a retry of a request that has its answer gets that answer once the
account is frozen or its payment password locked (only a new request is refused): a client coded against the
document treats a 201 it was told it cannot get, or reads its 423 advice as "the payment was not made"."""

from __future__ import annotations

from tests.api.test_account_freeze import cli

WRONG = "000000"


def _key_rules(client, path: str) -> str:
    operation = client.get("/api/v1/openapi.json").json["paths"][path]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    return parameter["description"]


def test_the_documented_replay_rules_are_what_a_retry_gets_once_locked_or_frozen(api, app):
    alice, bob = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=50000, bank_card_id=alice["card_id"]).status_code == 201
    body = {"to_phone": bob["phone"], "amount": 1200}
    first = api.money("/api/v1/transfers", alice, key="lost-answer", **body)
    assert first.status_code == 201, first.json
    for n in range(3):
        api.client.post("/api/v1/transfers", headers={**alice["headers"], "Idempotency-Key": f"wrong-{n}"},
                        json={"payment_password": WRONG, **body})
    locked_retry = api.money("/api/v1/transfers", alice, key="lost-answer", **body)
    assert (locked_retry.status_code, locked_retry.headers.get("Idempotent-Replayed")) == (201, "true")
    assert cli(app, "freeze", alice["phone"], "--reason", "under review").exit_code == 0
    frozen_retry = api.money("/api/v1/transfers", alice, key="lost-answer", **body)
    assert (frozen_retry.status_code, frozen_retry.headers.get("Idempotent-Replayed")) == (201, "true")

    rules = _key_rules(api.client, "/api/v1/transfers")
    assert "423 while it is locked" not in rules, rules  # what the server does not do
    assert "frozen" in rules and "locked" in rules, rules  # the exception a client must know of is documented
