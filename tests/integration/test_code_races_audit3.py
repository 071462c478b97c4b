"""A code asked for on the account's number while the account moves to another (found by the races audit; PostgreSQL
only, SQLite runs one write transaction at a time). A phone change spends the codes still open on the old number
(``codes.void_codes``): read by whoever holds that number, a recovery or login code would open the number's next
account. A request in flight, which read the account still on the number and had not committed its code when the move
spent the number's codes, left that code alive for its ten minutes. The move now waits for the number's requests in
flight, and a request that comes while the move spends the codes waits for it and finds the number free."""

from __future__ import annotations

import re

import pytest

import security.codes as codes
from tests.factories import LOGIN_PASSWORD, make_phone
from tests.integration.test_money_races_audit import first_pauses_inside
from tests.pg_races import answer, postgres_only  # noqa: F401 - postgres_only: an autouse fixture

pytestmark = pytest.mark.postgres


def _use(api, phone, purpose, code):
    if purpose == "recover":
        return api.client.post("/api/v1/password-resets",
                               json={"phone": phone, "sms_code": code, "new_password": "taken over now"})
    return api.login(phone, LOGIN_PASSWORD, device_id="someone-else", sms_code=code)


@pytest.mark.parametrize("purpose", ["recover", "login"])
@pytest.mark.parametrize("first", ["the request", "the move"])
def test_a_code_asked_for_as_the_account_leaves_the_number_is_dead_for_its_next_account(api, app, inbox, monkeypatch,
                                                                                      purpose, first):
    previous, new_number = api.register(), make_phone()
    old = previous["phone"]
    move_code = api.code(new_number, "change_phone")
    texted_before = len(inbox.messages(to=old, event="sms_code"))

    def ask():
        return answer(app.test_client().post("/api/v1/sms-codes", json={"phone": old, "purpose": purpose}))

    def move():
        return answer(app.test_client().put("/api/v1/me/phone", headers=previous["headers"], json={
            "new_phone": new_number, "sms_code": move_code, "login_password": LOGIN_PASSWORD}))

    if first == "the request":  # paused where it queues the code's text: the code row written, not committed
        asked, moved, waited = first_pauses_inside(monkeypatch, codes, "enqueue", ask, move)
    else:  # paused once it has spent the old number's codes, the move not committed
        moved, asked, waited = first_pauses_inside(monkeypatch, codes, "void_codes", move, ask, after=True)
    assert asked[0] == 202, asked
    assert moved[0] == 204, moved
    texted = [re.search(r"(?<!\d)\d{6}(?!\d)", message["body"]).group()
              for message in inbox.messages(to=old, event="sms_code")[texted_before:]]
    # The request that went first read the account on the number and texted its code; one that waited for the move
    # found the number free and texted none.
    assert len(texted) == (1 if first == "the request" else 0), texted
    newcomer = api.register(old, device_id="newcomer-phone")
    for code in texted:
        used = _use(api, old, purpose, code)
        assert (used.status_code, (used.json or {}).get("code")) == (401, "invalid_sms_code"), used.json
    assert api.client.get("/api/v1/me", headers=newcomer["headers"]).status_code == 200
    assert waited, "one did not wait for the other"
