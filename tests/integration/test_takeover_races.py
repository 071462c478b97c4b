"""Account changes raced with the overlap forced (the pattern of ``test_money_races_audit``): a refresh stopped inside
its transaction while the owner recovers or changes the login password, and two sign-ups for one number (a phone
change stopped after writing the number, not committed, while another account moves there or a newcomer registers
it). PostgreSQL only: SQLite runs one write transaction at a time."""

from __future__ import annotations

import pyotp
import pytest

import security.accounts as accounts
import security.tokens as tokens
import security.totp as totp
from tests.factories import LOGIN_PASSWORD, make_phone
from tests.integration.test_money_races_audit import first_pauses_inside
from tests.pg_races import answer, postgres_only  # noqa: F401 - postgres_only: an autouse fixture

pytestmark = pytest.mark.postgres

NEW_PASSWORD = "a brand new phrase"


@pytest.mark.parametrize("owner_acts", ["recovers the password", "changes the password"])
@pytest.mark.parametrize("paused", ["before minting", "after minting"])
def test_a_refresh_racing_a_password_change_mints_only_dead_tokens(api, app, monkeypatch, owner_acts, paused):
    """DESIGN 4.3: password change or recovery revokes every other session, also one whose refresh was in flight."""
    owner = api.register(device_id="owner-phone")
    other = api.login(owner["phone"], device_id="owner-phone").json  # the session a thief's copy would rotate

    def refresh():
        return answer(app.test_client().post("/api/v1/sessions/refresh", json={
            "refresh_token": other["refresh_token"], "device_id": "owner-phone"}))

    def act():
        client = app.test_client()
        if owner_acts == "recovers the password":
            code = api.code(owner["phone"], "recover")
            return answer(client.post("/api/v1/password-resets", json={
                "phone": owner["phone"], "sms_code": code, "new_password": NEW_PASSWORD}))
        return answer(client.put("/api/v1/me/login-password", headers=owner["headers"],
                                 json={"current_password": LOGIN_PASSWORD, "new_password": NEW_PASSWORD}))

    rotated, changed, _ = first_pauses_inside(monkeypatch, tokens, "_mint", refresh, act,
                                              after=paused == "after minting")
    assert changed[0] == 204, changed
    assert rotated[0] in (200, 401), rotated
    if rotated[0] == 200:  # minted into a session the change revoked: nothing it minted works
        new = rotated[1]
        me = api.client.get("/api/v1/me", headers=api.bearer(new["access_token"]))
        assert (me.status_code, me.json["code"]) == (401, "unauthenticated")
        again = api.client.post("/api/v1/sessions/refresh", json={"refresh_token": new["refresh_token"],
                                                                  "device_id": "owner-phone"})
        assert again.status_code == 401
    if owner_acts == "changes the password":  # the session that made the change stays, as DESIGN says
        assert api.client.get("/api/v1/me", headers=owner["headers"]).status_code == 200


@pytest.mark.parametrize("rival", ["another account moves there", "a newcomer registers it"])
def test_two_accounts_racing_for_one_number_one_gets_it_and_the_other_a_409(api, app, inbox, monkeypatch, rival):
    mover, other = api.register(), api.register()
    number = make_phone()
    first_code = api.code(number, "change_phone")
    second_code = {}

    def move():
        return answer(app.test_client().put("/api/v1/me/phone", headers=mover["headers"], json={
            "new_phone": number, "sms_code": first_code, "login_password": LOGIN_PASSWORD}))

    def take():
        client = app.test_client()
        # Asked for while the first move is written and not committed: the number still looks free.
        if rival == "another account moves there":
            code = api.code(number, "change_phone")
            second_code["sent"] = code
            return answer(client.put("/api/v1/me/phone", headers=other["headers"], json={
                "new_phone": number, "sms_code": code, "login_password": LOGIN_PASSWORD}))
        code = api.code(number, "register")
        second_code["sent"] = code
        return answer(client.post("/api/v1/users", json={
            "phone": number, "sms_code": code, "login_password": LOGIN_PASSWORD, "payment_password": "135790",
            "device_id": "newcomer"}))

    # ``lift_lock`` runs right after the move's UPDATE of the number: paused there, the row is written, uncommitted.
    moved, taken, waited = first_pauses_inside(monkeypatch, accounts, "lift_lock", move, take)
    assert second_code, "the rival never got a code"
    assert waited, "the rival did not wait for the first move"
    assert moved[0] == 204, moved
    assert (taken[0], taken[1]["code"]) == (409, "phone_taken"), taken
    assert api.client.get("/api/v1/me", headers=mover["headers"]).json["phone"] == number
    assert api.client.get("/api/v1/me", headers=other["headers"]).json["phone"] == other["phone"]
    assert len(inbox.messages(to=number, event="phone_changed_new")) == 1


@pytest.mark.parametrize("history", ["the number's first wrong entries", "after an earlier wrong entry"])
def test_a_wrong_authenticator_code_at_recovery_leaves_standing_a_lock_made_meanwhile(api, app, clock, monkeypatch,
                                                                                      history):
    """DESIGN 4.2: three wrong passwords lock the login for three hours. A recovery's wrong authenticator code checked
    while they locked it must not undo the lock. With no lock row yet (the number's first failures), the recovery
    held nothing while it checked the code, and recording its failure over the lock rebuilt an unlocked state from the
    emptied window (found by an audit): the guesser's fourth try was a 401 with one attempt left. (Since the fifth
    audit the recovery's codes have a lock of their own; the login's lock must still stand.)"""
    owner = api.register()
    phone = owner["phone"]
    secret = api.client.post("/api/v1/me/totp", headers=owner["headers"],
                             json={"login_password": LOGIN_PASSWORD}).json["secret"]
    authenticator = pyotp.TOTP(secret)
    assert api.client.post("/api/v1/me/totp/verify", headers=owner["headers"],
                           json={"code": authenticator.at(clock.now())}).status_code == 200
    if history == "after an earlier wrong entry":
        assert api.login(phone, "not the password").status_code == 401
        assert api.login(phone, LOGIN_PASSWORD).status_code == 201  # clears the failures; the row stays
    clock.advance(minutes=2)
    wrong_code = f"{(int(authenticator.at(clock.now())) + 1) % 10**6:06d}"
    recover_code = api.code(phone, "recover")

    def recovery():  # the SIM, with a wrong authenticator code
        return answer(app.test_client().post("/api/v1/password-resets", json={
            "phone": phone, "sms_code": recover_code, "new_password": NEW_PASSWORD, "totp_code": wrong_code}))

    def three_wrong_passwords():
        client = app.test_client()
        return [answer(client.post("/api/v1/sessions", json={
            "phone": phone, "login_password": "not the password", "device_id": "phone-1"}))[0] for _ in range(3)]

    recovered, guesses, waited = first_pauses_inside(monkeypatch, totp, "accept", recovery, three_wrong_passwords)
    # Since the fifth audit the recovery's codes count toward a lock of their own: the recovery holds nothing the
    # passwords need (before, it held the login's lock row and they waited), and each lock counts apart.
    assert not waited
    assert guesses == [401, 401, 423]
    assert (recovered[0], recovered[1]["code"], recovered[1]["attempts_left"]) == (401, "invalid_totp_code", 2), \
        recovered
    after = api.login(phone, "not the password")
    assert (after.status_code, after.json["code"]) == (423, "login_locked"), after.json
    assert api.login(phone, LOGIN_PASSWORD).status_code == 423
