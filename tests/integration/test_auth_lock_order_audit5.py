"""Security paths that took the same rows in opposite orders (found by the fifth audit; PostgreSQL only, SQLite runs
one write transaction at a time). Each crossing cost a deadlock: PostgreSQL broke it after its deadlock_timeout (a
second) and the transaction it picked ran again. Each test stops the first path inside its transaction, its first
locks taken, runs the second until it waits on a lock, lets the first go, and asserts that no deadlock was broken
(no 40P01 reached ``run_in_transaction``) and that each answered as run one after the other.

* A login from a trusted device took the number's login lock state (``FOR UPDATE``) and then, opening its session,
  the account's row (``FOR KEY SHARE``, the session's foreign key); a recovery takes the account's row
  (``FOR UPDATE``) and then the login lock state (to lift it). The login now takes the account's row first.
* A change of the payment password by the current one took the payment lock state and then the account's row; a
  change by SMS code took the account's row and then the payment lock state (to lift it). The SMS change now takes
  the payment lock state first, as every payment does (it holds it while writing rows that point at the account).
* A recovery revoked the account's sessions and then signed its devices out; revoking one device locks the device
  and then revokes its sessions. The recovery now signs the devices out first.
"""

from __future__ import annotations

import pytest

import security.accounts as accounts
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD
from tests.integration.test_money_races_audit import first_pauses_inside, retries_recorded
from tests.pg_races import answer, postgres_only  # noqa: F401 - the autouse skip on SQLite

pytestmark = pytest.mark.postgres

RECOVERED = "recovered while logging in"
NEW_PIN = "468024"


def _with_a_login_lock_row(api, phone):
    """A wrong password and then the right one: the number's lock state row exists (empty), as it does for most."""
    assert api.login(phone, "not the password", device_id="owner-phone").status_code == 401
    assert api.login(phone, LOGIN_PASSWORD, device_id="owner-phone").status_code == 201


def _recovery(app, api, phone):
    code = api.code(phone, "recover")
    return lambda: answer(app.test_client().post("/api/v1/password-resets", json={
        "phone": phone, "sms_code": code, "new_password": RECOVERED}))


def test_a_trusted_device_login_racing_a_recovery_takes_the_account_row_before_the_login_lock(api, app, monkeypatch):
    owner = api.register(device_id="owner-phone")
    phone = owner["phone"]
    _with_a_login_lock_row(api, phone)
    retried = retries_recorded(monkeypatch)

    def login():
        return answer(app.test_client().post("/api/v1/sessions", json={
            "phone": phone, "login_password": LOGIN_PASSWORD, "device_id": "owner-phone"}))

    # The recovery stops where it lifts the login lock: the account's row is locked, the lock state not yet.
    recovered, logged_in, waited = first_pauses_inside(monkeypatch, accounts, "lift_lock", _recovery(app, api, phone),
                                                       login)
    assert waited  # the login queued behind the recovery
    assert recovered[0] == 204, recovered
    assert (logged_in[0], logged_in[1]["code"]) == (401, "invalid_credentials"), logged_in  # the password changed
    assert "40P01" not in retried, retried
    assert api.login(phone, RECOVERED, device_id="owner-phone", sms_code=api.code(phone, "login")).status_code == 201


def _put_payment_password(app, who, **body):
    return lambda: answer(app.test_client().put("/api/v1/me/payment-password", headers=who["headers"],
                                                json={"new_payment_password": NEW_PIN, **body}))


def test_payment_password_changes_by_sms_and_by_the_current_one_take_the_lock_state_before_the_account_row(
        api, app, monkeypatch):
    owner = api.register()
    wrong = app.test_client().post("/api/v1/me/payment-password/verify", headers=owner["headers"],
                                   json={"payment_password": "975319"})
    assert wrong.status_code == 401  # the payment lock state row exists
    by_sms = _put_payment_password(app, owner, sms_code=api.code(owner["phone"], "recover"))
    by_current = _put_payment_password(app, owner, current_payment_password=PAYMENT_PASSWORD)
    retried = retries_recorded(monkeypatch)

    # The SMS change stops where it lifts the payment lock, the account's row locked and the new hash written.
    sms, current, waited = first_pauses_inside(monkeypatch, accounts, "lift_lock", by_sms, by_current)
    assert waited
    assert sms[0] == 204, sms
    assert (current[0], current[1]["code"]) == (401, "invalid_credentials"), current  # the password it knew is gone
    assert "40P01" not in retried, retried
    verify = app.test_client().post("/api/v1/me/payment-password/verify", headers=owner["headers"],
                                    json={"payment_password": NEW_PIN})
    assert verify.status_code == 200, verify.json


def test_a_recovery_racing_a_device_revocation_signs_devices_out_before_revoking_sessions(api, app, monkeypatch):
    owner = api.register(device_id="owner-phone")
    phone = owner["phone"]
    tablet = api.login(phone, device_id="owner-tablet", sms_code=api.code(phone, "login"))
    assert tablet.status_code == 201
    listed = api.client.get("/api/v1/devices", headers=owner["headers"]).json["data"]
    (device_id,) = [d["id"] for d in listed if not d["current"]]  # the tablet
    retried = retries_recorded(monkeypatch)

    def revoke():
        return answer(app.test_client().delete(f"/api/v1/devices/{device_id}", headers=owner["headers"]))

    # The recovery stops once it has revoked the sessions (before, the devices came after them).
    recovered, revoked, waited = first_pauses_inside(monkeypatch, accounts, "revoke_sessions",
                                                     _recovery(app, api, phone), revoke, after=True)
    assert waited  # the revocation queued behind the recovery
    assert recovered[0] == 204, recovered
    assert (revoked[0], revoked[1]["code"]) == (404, "not_found"), revoked  # the recovery signed it out already
    assert "40P01" not in retried, retried
