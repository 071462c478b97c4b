"""A change proven by a password, verified with the old one while the owner's own change commits (found by the
concurrency audit; PostgreSQL only, SQLite runs one write transaction at a time). Each change verifies its password
(argon2, outside any transaction) and writes in a transaction after it; the first call below is stopped right after
its verification (``first_pauses_inside`` on the hasher's ``verify``) while the owner acts. Run one after the other,
the late change would be refused (its password or session no longer stands), and so it is now: under the account's
row lock the change checks that the password it verified is still the account's and that its session lives. Before,
the thief's change committed last and replaced the owner's new password, or moved the account to the thief's number.
"""

from __future__ import annotations

import pyotp
import pytest
from sqlalchemy import func, select

import security.accounts as accounts
from core.db import db
from security.models import SmsCode, User
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.integration.test_escrow_races import post, together
from tests.integration.test_money_races_audit import first_pauses_inside
from tests.pg_races import answer, postgres_only  # noqa: F401 - postgres_only: an autouse fixture

pytestmark = pytest.mark.postgres

OWNERS_PASSWORD, THIEFS_PASSWORD = "the owner's new phrase", "the thief's own phrase"
OWNERS_PIN, THIEFS_PIN = "468024", "975319"


def _after_verify(app, monkeypatch, first, second):
    """``first`` stopped right after its argon2 verification while ``second`` runs; both answers."""
    first_answer, second_answer, _ = first_pauses_inside(monkeypatch, app.extensions["passwords"], "verify", first,
                                                         second, after=True)
    return first_answer, second_answer


def _thief(api, owner):
    """A second session of the owner's account on the owner's device: stolen tokens, and the old password."""
    tokens = api.login(owner["phone"], device_id="owner-phone").json
    return {**owner, "headers": api.bearer(tokens["access_token"])}


def _put(app, who, path, **body):
    return lambda: answer(app.test_client().put(path, headers=who["headers"], json=body))


def _login_password_is(app, phone, password) -> bool:
    with app.app_context():
        stored = db.session.scalar(select(User.login_password_hash).where(User.phone == phone))
        db.session.rollback()
    return app.extensions["passwords"].verify(stored, password)


def _payment_password_works(app, who, pin) -> int:
    return app.test_client().post("/api/v1/me/payment-password/verify", headers=who["headers"],
                                  json={"payment_password": pin}).status_code


@pytest.mark.parametrize("owner_acts", ["recovers by SMS", "changes it"])
def test_a_login_password_change_in_flight_does_not_undo_the_owners(api, app, monkeypatch, owner_acts):
    owner = api.register(device_id="owner-phone")
    thief = _thief(api, owner)

    def owners_change():
        if owner_acts == "recovers by SMS":
            code = api.code(owner["phone"], "recover")
            return answer(app.test_client().post("/api/v1/password-resets", json={
                "phone": owner["phone"], "sms_code": code, "new_password": OWNERS_PASSWORD}))
        return _put(app, owner, "/api/v1/me/login-password", current_password=LOGIN_PASSWORD,
                    new_password=OWNERS_PASSWORD)()

    thiefs, owners = _after_verify(app, monkeypatch, _put(app, thief, "/api/v1/me/login-password",
                                                          current_password=LOGIN_PASSWORD,
                                                          new_password=THIEFS_PASSWORD), owners_change)
    assert owners[0] == 204, owners
    assert thiefs[0] == 401, thiefs
    assert _login_password_is(app, owner["phone"], OWNERS_PASSWORD)


def test_a_phone_change_from_a_session_revoked_meanwhile_does_not_move_the_account(api, app, monkeypatch):
    owner = api.register(device_id="owner-phone")
    thief, number = _thief(api, owner), make_phone()
    code = api.code(number, "change_phone")
    moved, changed = _after_verify(
        app, monkeypatch, _put(app, thief, "/api/v1/me/phone", new_phone=number, sms_code=code,
                               login_password=LOGIN_PASSWORD),
        _put(app, owner, "/api/v1/me/login-password", current_password=LOGIN_PASSWORD,
             new_password=OWNERS_PASSWORD))
    assert changed[0] == 204, changed
    assert moved[0] == 401, moved
    assert api.client.get("/api/v1/me", headers=owner["headers"]).json["phone"] == owner["phone"]


@pytest.mark.parametrize("change", ["email", "authenticator"])
def test_an_email_or_authenticator_change_from_a_session_revoked_meanwhile_is_refused(api, app, monkeypatch,
                                                                                      change):
    owner = api.register(device_id="owner-phone")
    thief = _thief(api, owner)
    if change == "email":
        thiefs = lambda: answer(app.test_client().patch(  # noqa: E731
            "/api/v1/me", headers=thief["headers"], json={"email": "thief@example.com",
                                                            "login_password": LOGIN_PASSWORD}))
    else:
        thiefs = lambda: post(app, thief, "/api/v1/me/totp", login_password=LOGIN_PASSWORD)  # noqa: E731
    changed, owners = _after_verify(app, monkeypatch, thiefs,
                                    _put(app, owner, "/api/v1/me/login-password", current_password=LOGIN_PASSWORD,
                                         new_password=OWNERS_PASSWORD))
    assert owners[0] == 204, owners
    assert changed[0] == 401, changed
    with app.app_context():
        account = db.session.scalars(select(User).where(User.phone == owner["phone"])).one()
        assert (account.email, account.totp_secret) == (None, None)
        db.session.rollback()


def test_two_payment_password_changes_at_once_leave_the_owners(api, app, monkeypatch):
    owner = api.register(device_id="owner-phone")
    thief = _thief(api, owner)
    thiefs, owners = _after_verify(
        app, monkeypatch, _put(app, thief, "/api/v1/me/payment-password", current_payment_password=PAYMENT_PASSWORD,
                               new_payment_password=THIEFS_PIN),
        _put(app, owner, "/api/v1/me/payment-password", current_payment_password=PAYMENT_PASSWORD,
             new_payment_password=OWNERS_PIN))
    assert owners[0] == 204, owners
    assert (thiefs[0], thiefs[1]["code"]) == (401, "invalid_credentials"), thiefs
    assert (_payment_password_works(app, owner, OWNERS_PIN), _payment_password_works(app, owner, THIEFS_PIN)) \
        == (200, 401)


def test_a_payment_in_flight_never_writes_the_old_payment_password_back(api, app, monkeypatch):
    """With the hashing parameters raised since the old hash was made, a payment verified with the old password
    rehashed it and wrote it over the change that committed meanwhile: the old (perhaps leaked) password worked
    again and the owner's new one did not. The payment itself completes, as one whose check began before a freeze
    does (``authorize_payment``)."""
    owner = api.verified()
    hasher = app.extensions["passwords"]
    monkeypatch.setattr(hasher, "needs_rehash", lambda stored: True)
    paid, changed = _after_verify(
        app, monkeypatch, lambda: post(app, owner, "/api/v1/topups", key="in-flight", payment_password=PAYMENT_PASSWORD,
                                       amount=1000, bank_card_id=owner["card_id"]),
        _put(app, owner, "/api/v1/me/payment-password", current_payment_password=PAYMENT_PASSWORD,
             new_payment_password=OWNERS_PIN))
    assert changed[0] == 204, changed
    assert paid[0] == 201, paid
    assert (_payment_password_works(app, owner, OWNERS_PIN), _payment_password_works(app, owner, PAYMENT_PASSWORD)) \
        == (200, 401)


def test_code_requests_at_once_leave_only_the_newest_code_valid(api, app):
    """``security.codes``: only the newest code for a number and purpose is valid. Three requests at once each spent
    the codes before them and none saw the others' new ones: three stayed valid."""
    phone = make_phone()

    def ask():
        return answer(app.test_client().post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"}))

    for _ in range(5):
        assert [status for status, _ in together(ask, ask, ask)] == [202, 202, 202]
        with app.app_context():
            valid = db.session.scalar(select(func.count()).select_from(SmsCode).where(
                SmsCode.phone == phone, SmsCode.purpose == "register", SmsCode.consumed_at.is_(None)))
            db.session.rollback()
        assert valid == 1


def test_a_code_confirms_only_the_authenticator_secret_it_came_from(api, app, clock, monkeypatch):
    """The confirmation locked the account's row but kept the values the request had read before it: a second
    enrolment that committed in between (an app's retry, another device) was not seen, and the first secret's code
    switched on the second secret, which no code had proved (found by the time-of-check audit)."""
    owner = api.register(device_id="owner-phone")
    first = api.client.post("/api/v1/me/totp", headers=owner["headers"], json={"login_password": LOGIN_PASSWORD})
    code = pyotp.TOTP(first.json["secret"]).at(clock.now())

    def confirm():
        return answer(app.test_client().post("/api/v1/me/totp/verify", headers=owner["headers"], json={"code": code}))

    confirmed, enrolled, _ = first_pauses_inside(monkeypatch, accounts, "confirm_totp_enrolment", confirm,
                                                 post_totp(app, owner))
    assert enrolled[0] == 201, enrolled
    assert confirmed[0] == 401, confirmed
    with app.app_context():
        secret, enabled = db.session.execute(select(User.totp_secret, User.totp_enabled)
                                             .where(User.phone == owner["phone"])).one()
        db.session.rollback()
    assert (secret, enabled) == (enrolled[1]["secret"], False)


def post_totp(app, who):
    return lambda: post(app, who, "/api/v1/me/totp", login_password=LOGIN_PASSWORD)
