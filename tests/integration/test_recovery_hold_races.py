"""The hold after a recovery by SMS alone (``SMS_RECOVERY_HOLD_HOURS``) raced with what it holds off: an SMS reset of
the payment password, a phone change, an authenticator enrolment and a real-name verification, each started while a
recovery of the same account is on its way, with the overlap forced (``first_pauses_inside``). Whichever order the
two take, the change must not land after the recovery: it is refused (403), or it committed before the recovery
began. PostgreSQL only: SQLite runs one write transaction at a time."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import security.accounts as accounts
import security.codes as codes
import security.identity as identity
import security.totp as totp
from core.db import db
from security.identity_models import Identity
from security.models import User
from tests.factories import LOGIN_PASSWORD, make_phone
from tests.factories_ids import make_id_number
from tests.integration.test_money_races_audit import first_pauses_inside
from tests.pg_races import answer, postgres_only  # noqa: F401 - postgres_only: an autouse fixture

pytestmark = pytest.mark.postgres

RECOVERED = "recovered by sms"
REFUSALS = {"payment password by SMS": "payment_password_reset_too_soon", "phone": "account_recently_recovered",
            "authenticator": "account_recently_recovered", "identity": "account_recently_recovered"}


def _held_columns(app, user_id):
    """What the hold protects: the payment password, the phone number, the authenticator and the identity."""
    with app.app_context():
        verified = select(Identity.id).where(Identity.user_id == User.id).exists().label("verified")
        row = db.session.execute(select(User.payment_password_hash, User.phone, User.totp_secret, User.totp_enabled,
                                        User.password_recovered_at, verified).where(User.id == user_id)).one()
        db.session.rollback()
    return row


@pytest.mark.parametrize("change", list(REFUSALS))
@pytest.mark.parametrize("overlap", ["the recovery commits between the change's check and its write",
                                     "the change checks while the recovery is not committed"])
def test_a_change_held_after_a_recovery_never_lands_after_a_concurrent_recovery(api, app, inbox, monkeypatch, change,
                                                                                  overlap):
    owner = api.register(locale="en")
    phone = owner["phone"]
    user_id = api.client.get("/api/v1/me", headers=owner["headers"]).json["id"]
    before = _held_columns(app, user_id)
    assert before.password_recovered_at is None

    def recover():
        code = api.code(phone, "recover")
        return answer(app.test_client().post("/api/v1/password-resets", json={
            "phone": phone, "sms_code": code, "new_password": RECOVERED}))

    def act():
        client = app.test_client()
        if change == "payment password by SMS":
            code = api.code(phone, "recover")
            return answer(client.put("/api/v1/me/payment-password", headers=owner["headers"],
                                     json={"sms_code": code, "new_payment_password": "246813"}))
        if change == "phone":
            new_phone = make_phone()
            code = api.code(new_phone, "change_phone")
            return answer(client.put("/api/v1/me/phone", headers=owner["headers"], json={
                "new_phone": new_phone, "sms_code": code, "login_password": LOGIN_PASSWORD}))
        if change == "identity":
            return answer(client.post("/api/v1/me/identity", headers=owner["headers"],
                                      json={"real_name": "张三", "id_number": make_id_number()}))
        return answer(client.post("/api/v1/me/totp", headers=owner["headers"],
                                  json={"login_password": LOGIN_PASSWORD}))

    if overlap == "the recovery commits between the change's check and its write":
        # Paused once its hold check passed, outside any transaction; the whole recovery runs meanwhile.
        target, name = {"authenticator": (totp, "new_secret"), "identity": (identity, "provider")}.get(
            change, (codes, "consume_code"))
        changed, recovered, _ = first_pauses_inside(monkeypatch, target, name, act, recover, after=True)
    else:
        # The recovery is paused inside its transaction, its row locked and written, not committed: the change's
        # check sees no recovery yet, and its write must wait for the recovery and then see it.
        recovered, changed, waited = first_pauses_inside(monkeypatch, accounts, "lift_lock", recover, act)
        assert waited, "the change did not wait for the recovery in flight"
    assert recovered[0] == 204, recovered
    assert changed[0] == 403 and changed[1]["code"] == REFUSALS[change], changed
    after = _held_columns(app, user_id)
    assert after.password_recovered_at is not None
    assert after[:4] == before[:4]  # neither payment password, nor phone, nor authenticator changed
    assert after.verified is False  # nor an identity bound
    assert inbox.messages(to=phone, event="held_after_recovery")  # the owner hears of the refused change
