"""A login lock made by a stranger must not keep the owner of an account with an authenticator from recovering it
(found by the fifth audit; DESIGN 4.2, 4.3).

Anyone who knows a number can lock its login with three wrong passwords. A recovery of an account with an
authenticator counted its authenticator codes in that same lock and was refused while it lasted, so the owner, who
holds both the SIM and the authenticator, could neither recover nor log in for three hours: a denial of service by
anyone. Recovery's authenticator codes now count toward a lock of their own (``recover``): three wrong ones lock
recoveries for three hours (423 ``recovery_locked``, the owner is told), and a login lock no longer refuses a recovery
that brings a right SMS code and a right authenticator code. The recovery still lifts the login lock."""


from sqlalchemy import select

from core.db import db
from security.models import CredentialLock, User
from tests.api.test_recovery_audit import (
    RECOVERED,
    _account_rows,
    _enrol_totp,
    _recover,
    _wrong_code,
    locked_recovery,
)
from tests.factories import LOGIN_PASSWORD


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def _lock_kinds(app, phone):
    """The lock states (kind, locked or not) of the number's login and of the account's recovery."""
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.phone == phone))
        rows = db.session.execute(select(CredentialLock.kind, CredentialLock.locked_until)
                                  .where(CredentialLock.subject.in_([phone, user_id]))).all()
        db.session.rollback()
    return {kind: until is not None for kind, until in rows}


def test_a_login_locked_by_a_stranger_does_not_refuse_the_owners_recovery_with_sms_and_authenticator(
        api, app, clock, inbox):
    owner = api.register(locale="en")
    totp = _enrol_totp(api, clock, owner)
    phone = owner["phone"]

    stranger = [api.login(phone, f"guess number {i}", device_id="strangers-laptop") for i in range(3)]
    assert [(r.status_code, r.json["code"]) for r in stranger] == [
        (401, "invalid_credentials"), (401, "invalid_credentials"), (423, "login_locked")]
    assert len(inbox.messages(to=phone, event="login_locked")) == 1

    clock.advance(minutes=1)
    recovered = _recover(api, phone, totp_code=totp.at(clock.now()))
    assert recovered.status_code == 204, recovered.json
    assert len(inbox.messages(to=phone, event="password_recovered")) == 1
    assert _lock_kinds(app, phone).get("login") is False  # the recovery lifted the stranger's lock

    clock.advance(seconds=30)  # the recovery spent this step's code; the recovery signed every device out
    login = api.login(phone, RECOVERED, totp_code=totp.at(clock.now()))
    assert login.status_code == 201, login.json
    assert api.login(phone, LOGIN_PASSWORD, device_id="strangers-laptop").json["attempts_left"] == 2


def test_three_wrong_authenticator_codes_at_recovery_lock_recovery_and_the_right_code_is_refused_meanwhile(
        api, app, clock, inbox):
    owner, totp, before, locked_until = locked_recovery(api, app, clock, inbox)
    phone = owner["phone"]
    assert not inbox.messages(to=phone, event="login_locked")
    assert _lock_kinds(app, phone) == {"recover": True}

    clock.advance(minutes=1)
    right = _recover(api, phone, totp_code=totp.at(clock.now()))
    assert (right.status_code, right.json["code"], right.json["locked_until"]) == (423, "recovery_locked",
                                                                                    locked_until)
    assert _account_rows(app, phone) == before  # no password, no device or session touched
    assert not inbox.messages(to=phone, event="password_recovered")
    assert len(inbox.messages(to=phone, event="recovery_locked")) == 1

    # The recovery's lock is not the login's: the owner still logs in with the password from the trusted device.
    assert api.login(phone, LOGIN_PASSWORD).status_code == 201

    clock.advance(hours=3)
    assert _recover(api, phone, totp_code=totp.at(clock.now())).status_code == 204
    assert _lock_kinds(app, phone) == {"recover": False}  # the success cleared the recovery's count


def test_wrong_login_passwords_and_wrong_recovery_codes_count_apart(api, clock):
    owner = api.register()
    totp = _enrol_totp(api, clock, owner)
    phone = owner["phone"]
    for _ in range(2):
        assert api.login(phone, "not the password", device_id="elsewhere").status_code == 401
        assert _recover(api, phone, totp_code=_wrong_code(totp, clock)).json["code"] == "invalid_totp_code"
    third_code = _recover(api, phone, totp_code=_wrong_code(totp, clock))
    assert (third_code.status_code, third_code.json["code"]) == (423, "recovery_locked")
    third_password = api.login(phone, "not the password", device_id="elsewhere")
    assert (third_password.status_code, third_password.json["code"]) == (423, "login_locked")
