"""A state machine over accounts, lockout, sessions and devices (DESIGN 4.2, 4.3), driven through the HTTP API.

Two users (the first verified and topped up, so there is money to move) and three device keys. Hypothesis picks
logins with the right or a wrong login password, from trusted or new devices with or without an SMS code, payments
with the right or a wrong payment password, token refreshes (the current refresh token or a spent one), changes of
both passwords (the payment one by the current password or by SMS), recoveries by SMS, log-outs, device revocations
and moves of the clock. A model written from DESIGN 4.2/4.3 (not from ``security.lockout``) keeps per user the login
and payment lock states, the sessions and their tokens, which devices are trusted, the balance and the SMS alerts owed;
every answer is compared with it, never a 5xx, and after every step every token the model thinks alive opens
GET /me (and every one it thinks dead is refused), the balances match and the outbox holds exactly the alerts owed.
``tests/integration/test_lockout_stateful.py`` explores the lock rules in more depth (authenticators, unknown
numbers); this one is about how they meet sessions, refresh tokens, devices, money and the alerts.

About 10 s with the default 40 examples; ``ACCOUNTS_EXAMPLES=500`` explores afresh (random examples, ~2 min).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from core.clock import FrozenClock
from tests.conftest import Api, Inbox
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.factories_ids import make_card_number, make_id_number
from tests.machines import fresh_start, machine_app, machine_settings

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOW, LOCK_FOR, MAX_FAILURES, HARD_AFTER = timedelta(hours=24), timedelta(hours=3), 3, 10
ACCESS_LIFE, REFRESH_LIFE, RECOVERY_HOLD = timedelta(minutes=15), timedelta(days=30), timedelta(hours=24)
DEVICES = ("phone-a", "phone-b", "tablet-c")
LOGIN_PASSWORDS = (LOGIN_PASSWORD, "staple gun river 42", "purple monkey dishwasher 9")
PAYMENT_PASSWORDS = (PAYMENT_PASSWORD, "246813", "975318", "802461")
WRONG_LOGIN, WRONG_PAYMENT = "definitely not it", "314159"
PAYMENT = 100  # fen
MOSTLY_LIVE = st.sampled_from([True, True, True, False])  # mostly a session that works (else any, dead ones too)
# The alerts the model keeps count of (codes and the setup's alerts aside).
TRACKED = {"new_device_login", "login_password_changed", "payment_password_changed", "password_recovered",
           "login_locked", "payment_locked", "balance_payment", "transfer_received", "held_after_recovery",
           "email_changed"}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class Lock:
    """DESIGN 4.2 for one password: a rolling 24-hour window, the third wrong entry locks for three hours (the window
    then starts empty), a success clears it all, ten wrong in a row lock until an SMS reset."""

    recent: list[datetime] = field(default_factory=list)
    consecutive: int = 0
    until: datetime | None = None
    hard: bool = False

    def locked(self, now: datetime) -> bool:
        return self.hard or (self.until is not None and now < self.until)

    def fail(self, now: datetime) -> bool:
        """Count a wrong entry; True when it locked."""
        self.consecutive += 1
        if self.consecutive >= HARD_AFTER:
            self.recent, self.until, self.hard = [], None, True
            return True
        self.recent = [t for t in self.recent if now - t < WINDOW] + [now]
        if len(self.recent) >= MAX_FAILURES:
            self.recent, self.until = [], now + LOCK_FOR
            return True
        return False

    def left(self, now: datetime) -> int:
        in_window = [t for t in self.recent if now - t < WINDOW]
        return max(0, min(MAX_FAILURES - len(in_window), HARD_AFTER - self.consecutive))

    def clear(self) -> None:
        self.recent, self.consecutive, self.until, self.hard = [], 0, None, False


@dataclass
class Session:
    device: str
    access: list[tuple[str, datetime]]  # every access token minted for it, with its expiry
    refresh: str
    refresh_expires: datetime
    spent: list[str] = field(default_factory=list)  # refresh tokens already rotated
    live: bool = True


@dataclass
class Account:
    phone: str
    login_password: str = LOGIN_PASSWORD
    payment_password: str = PAYMENT_PASSWORD
    login: Lock = field(default_factory=Lock)
    payment: Lock = field(default_factory=Lock)
    trusted: dict[str, bool] = field(default_factory=dict)
    device_ids: dict[str, str] = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)
    recovered_at: datetime | None = None
    balance: int = 0
    emails: int = 0


def run_machine(app: Any, clock: FrozenClock, sms_file: Path) -> None:
    client = app.test_client()
    inbox = Inbox(app)
    api = Api(client, inbox)

    class Accounts(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            fresh_start(app, clock, sms_file, START)
            self.users: list[Account] = []
            self.owed: Counter[tuple[str, str]] = Counter()
            self.unchecked: list[tuple[str, datetime, Session]] = []  # access tokens not yet seen refused for good

        # -- plumbing -------------------------------------------------------------------------------------------

        @property
        def now(self) -> datetime:
            return clock.now()

        def call(self, method: str, path: str, **kwargs: Any) -> Any:
            response = client.open(path, method=method, **kwargs)
            assert response.status_code < 500, (method, path, response.status_code, response.get_data(as_text=True))
            return response

        def owe(self, phone: str, event: str) -> None:
            self.owed[(phone, event)] += 1

        def add_session(self, user: Account, device: str, body: dict[str, Any]) -> Session:
            session = Session(device, [(body["access_token"], self.now + ACCESS_LIFE)], body["refresh_token"],
                              self.now + REFRESH_LIFE)
            assert body["expires_in"] == ACCESS_LIFE.total_seconds()
            user.sessions.append(session)
            self.unchecked.append((body["access_token"], self.now + ACCESS_LIFE, session))
            if device not in user.device_ids:
                listed = self.call("GET", "/api/v1/devices", headers=api.bearer(body["access_token"]))
                assert listed.status_code == 200, listed.json
                names = {d["name"]: d for d in listed.json["data"]}
                assert names[device]["current"] and names[device]["trusted"], listed.json
                user.device_ids[device] = names[device]["id"]
            return session

        def usable(self, session: Session) -> str | None:
            """An access token of the session that the model says works now."""
            if not session.live:
                return None
            alive = [token for token, expires in session.access if self.now < expires]
            return alive[-1] if alive else None

        def pick_session(self, user: Account, pick: int, prefer_usable: bool) -> Session:
            """One of the user's sessions: when ``prefer_usable``, one whose access token works (refreshed, or logged
            in again, as an app would, if the model allows it), else any, dead ones included."""
            usable = [s for s in user.sessions if self.usable(s)]
            if prefer_usable and not usable:
                usable = self.revive(user)
            pool = usable if prefer_usable and usable else user.sessions
            return pool[pick % len(pool)]

        def revive(self, user: Account) -> list[Session]:
            """What an app does when its access token expired: refresh; signed out, log in again (with an SMS code
            on a device no longer trusted). Checked against the model like any other step."""
            for session in reversed(user.sessions):
                if session.live and self.now < session.refresh_expires:
                    self.refresh_one(session, session.refresh)
                    return [session]
            if user.login.locked(self.now):
                return []
            device = DEVICES[0]
            self.log_in_once(user, device, right=True, second="none" if user.trusted.get(device) else "right")
            return [s for s in user.sessions if self.usable(s)]

        def token_of(self, session: Session) -> str:
            """The session's newest access token (alive or not: the request then checks it is refused)."""
            return self.usable(session) or session.access[-1][0]

        def refused_unauthenticated(self, response: Any) -> None:
            assert (response.status_code, response.json["code"]) == (401, "unauthenticated"), response.json

        def code(self, phone: str, purpose: str) -> str:
            return api.code(phone, purpose)

        def expect_locked(self, response: Any, code: str, lock: Lock) -> None:
            assert (response.status_code, response.json["code"]) == (423, code), response.json
            assert response.json["hard_locked"] is lock.hard, (response.json, lock)
            if lock.hard:
                assert response.json["locked_until"] is None, response.json
            else:
                assert lock.until is not None and lock.until > self.now
                assert response.json["locked_until"] == iso(lock.until), (response.json, lock)

        def expect_wrong(self, response: Any, lock: Lock, phone: str, event: str, locked_code: str) -> None:
            """A wrong password was checked: the model counts it and the answer matches."""
            if lock.fail(self.now):
                self.owe(phone, event)
                self.expect_locked(response, locked_code, lock)
            else:
                assert (response.status_code, response.json["code"]) == (401, "invalid_credentials"), response.json
                assert response.json["attempts_left"] == lock.left(self.now), (response.json, lock)

        def revoke_all(self, user: Account, keep: Session | None = None) -> None:
            for session in user.sessions:
                if session is not keep:
                    session.live = False

        # -- setup ----------------------------------------------------------------------------------------------

        @initialize()
        def register_two(self) -> None:
            for index in range(2):
                phone = make_phone()
                response = self.call("POST", "/api/v1/users", json={
                    "phone": phone, "sms_code": self.code(phone, "register"), "login_password": LOGIN_PASSWORD,
                    "payment_password": PAYMENT_PASSWORD, "device_id": DEVICES[0], "device_name": DEVICES[0],
                    "locale": "en"})
                assert response.status_code == 201, response.json
                user = Account(phone, trusted={DEVICES[0]: True})
                self.users.append(user)
                session = self.add_session(user, DEVICES[0], response.json)
                if index == 0:  # the payer: a verified identity, a card, and 1,000.00 topped up
                    headers = api.bearer(session.access[-1][0])
                    identity = self.call("POST", "/api/v1/me/identity", headers=headers,
                                         json={"real_name": "李四", "id_number": make_id_number()})
                    assert identity.status_code in (200, 201), identity.json
                    card = self.call("POST", "/api/v1/me/bank-cards", headers=headers, json={
                        "card_number": make_card_number(), "holder_name": "李四", "bank_code": "ICBC",
                        "payment_password": PAYMENT_PASSWORD})
                    assert card.status_code == 201, card.json
                    topup = self.call("POST", "/api/v1/topups", headers={**headers, "Idempotency-Key": "setup"},
                                      json={"amount": 100000, "bank_card_id": card.json["id"],
                                            "payment_password": PAYMENT_PASSWORD})
                    assert topup.status_code == 201, topup.json
                    user.balance = 100000

        # -- rules ----------------------------------------------------------------------------------------------

        @rule(who=st.integers(0, 1), device=st.sampled_from(DEVICES), right=st.booleans(),
              second=st.sampled_from(["none", "right", "wrong"]))
        def log_in(self, who: int, device: str, right: bool, second: str) -> None:
            self.log_in_once(self.users[who], device, right, second)

        def log_in_once(self, user: Account, device: str, right: bool, second: str) -> None:
            body: dict[str, Any] = {"phone": user.phone, "device_id": device, "device_name": device,
                                    "login_password": user.login_password if right else WRONG_LOGIN}
            if second != "none":
                code = self.code(user.phone, "login")
                body["sms_code"] = code if second == "right" else f"{(int(code) + 1) % 10**6:06d}"
            response = self.call("POST", "/api/v1/sessions", json=body)
            if user.login.locked(self.now):
                self.expect_locked(response, "login_locked", user.login)
            elif not right:
                self.expect_wrong(response, user.login, user.phone, "login_locked", "login_locked")
            elif user.trusted.get(device):
                assert response.status_code == 201, response.json
                user.login.clear()
                self.add_session(user, device, response.json)
            elif second == "none":
                assert (response.status_code, response.json["code"]) == (401, "device_verification_required"), \
                    response.json
            elif second == "wrong":
                assert (response.status_code, response.json["code"]) == (401, "invalid_sms_code"), response.json
            else:
                assert response.status_code == 201, response.json
                user.login.clear()
                user.trusted[device] = True
                self.owe(user.phone, "new_device_login")
                self.add_session(user, device, response.json)

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), live=MOSTLY_LIVE, right=st.booleans(),
              times=st.sampled_from([1, 1, 2, 3]))
        def pay(self, who: int, pick: int, live: bool, right: bool, times: int) -> None:
            for _ in range(1 if right else times):
                self.pay_once(self.users[who], self.users[1 - who], pick, live, right)

        def pay_once(self, user: Account, other: Account, pick: int, live: bool, right: bool) -> None:
            session = self.pick_session(user, pick, live)
            token = self.token_of(session)
            response = self.call("POST", "/api/v1/transfers", headers={
                **api.bearer(token), "Idempotency-Key": uuid.uuid4().hex}, json={
                "to_phone": other.phone, "amount": PAYMENT,
                "payment_password": user.payment_password if right else WRONG_PAYMENT})
            if not self.usable(session):
                self.refused_unauthenticated(response)
            elif user.payment.locked(self.now):
                self.expect_locked(response, "payment_password_locked", user.payment)
            elif not right:
                self.expect_wrong(response, user.payment, user.phone, "payment_locked", "payment_password_locked")
            elif user.balance < PAYMENT:
                assert (response.status_code, response.json["code"]) == (422, "insufficient_funds"), response.json
                user.payment.clear()
            else:
                assert response.status_code == 201, response.json
                assert response.json["balance_after"] == user.balance - PAYMENT, response.json
                user.payment.clear()
                user.balance -= PAYMENT
                other.balance += PAYMENT
                self.owe(user.phone, "balance_payment")
                self.owe(other.phone, "transfer_received")

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), spent=st.booleans(), elsewhere=st.sampled_from(
            [False, False, False, True]))
        def refresh(self, who: int, pick: int, spent: bool, elsewhere: bool) -> None:
            user = self.users[who]
            session = user.sessions[pick % len(user.sessions)]
            token = session.spent[pick % len(session.spent)] if spent and session.spent else session.refresh
            if elsewhere:  # a refresh token is bound to its device: one copied to another is refused, and not spent
                other = next(d for d in DEVICES if d != session.device)
                response = self.call("POST", "/api/v1/sessions/refresh",
                                     json={"refresh_token": token, "device_id": other})
                self.refused_unauthenticated(response)
                return
            self.refresh_one(session, token)

        def refresh_one(self, session: Session, token: str) -> None:
            response = self.call("POST", "/api/v1/sessions/refresh",
                                 json={"refresh_token": token, "device_id": session.device})
            if token in session.spent:  # reuse: the whole family is revoked
                assert (response.status_code, response.json["code"]) == (401, "refresh_token_reused"), response.json
                session.live = False
            elif not session.live or self.now >= session.refresh_expires:
                self.refused_unauthenticated(response)
            else:
                assert response.status_code == 200, response.json
                session.spent.append(session.refresh)
                session.refresh = response.json["refresh_token"]
                session.access.append((response.json["access_token"], self.now + ACCESS_LIFE))
                self.unchecked.append((response.json["access_token"], self.now + ACCESS_LIFE, session))

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), live=MOSTLY_LIVE, right=st.booleans(),
              new=st.sampled_from(LOGIN_PASSWORDS))
        def change_login_password(self, who: int, pick: int, live: bool, right: bool, new: str) -> None:
            user = self.users[who]
            session = self.pick_session(user, pick, live)
            response = self.call("PUT", "/api/v1/me/login-password", headers=api.bearer(self.token_of(session)),
                                 json={"current_password": user.login_password if right else WRONG_LOGIN,
                                       "new_password": new})
            if not self.usable(session):
                self.refused_unauthenticated(response)
            elif user.login.locked(self.now):
                self.expect_locked(response, "login_locked", user.login)
            elif not right:
                session.live = False  # whoever holds a session without knowing the password loses it
                self.expect_wrong(response, user.login, user.phone, "login_locked", "login_locked")
            else:
                assert response.status_code == 204, response.json
                user.login.clear()
                user.login_password = new
                self.revoke_all(user, keep=session)
                self.owe(user.phone, "login_password_changed")

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), live=MOSTLY_LIVE,
              how=st.sampled_from(["right", "wrong", "sms"]), new=st.sampled_from(PAYMENT_PASSWORDS))
        def change_payment_password(self, who: int, pick: int, live: bool, how: str, new: str) -> None:
            user = self.users[who]
            session = self.pick_session(user, pick, live)
            body: dict[str, Any] = {"new_payment_password": new}
            held = user.recovered_at is not None and self.now < user.recovered_at + RECOVERY_HOLD
            if how == "sms":
                body["sms_code"] = self.code(user.phone, "recover")
            else:
                body["current_payment_password"] = user.payment_password if how == "right" else WRONG_PAYMENT
            response = self.call("PUT", "/api/v1/me/payment-password", headers=api.bearer(self.token_of(session)),
                                 json=body)
            if not self.usable(session):
                self.refused_unauthenticated(response)
            elif how == "sms" and held:
                assert (response.status_code, response.json["code"]) == (403, "payment_password_reset_too_soon"), \
                    response.json
                assert response.json["reason"] == "password_recovered", response.json
                self.owe(user.phone, "held_after_recovery")
            elif how == "sms":
                assert response.status_code == 204, response.json
                user.payment.clear()  # an SMS reset lifts a payment lock, hard ones too
                user.payment_password = new
                self.owe(user.phone, "payment_password_changed")
            elif user.payment.locked(self.now):
                self.expect_locked(response, "payment_password_locked", user.payment)
            elif how == "wrong":
                self.expect_wrong(response, user.payment, user.phone, "payment_locked", "payment_password_locked")
            else:
                assert response.status_code == 204, response.json
                user.payment.clear()
                user.payment_password = new
                self.owe(user.phone, "payment_password_changed")

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), live=MOSTLY_LIVE,
              right=st.booleans())
        def change_email(self, who: int, pick: int, live: bool, right: bool) -> None:
            user = self.users[who]
            session = self.pick_session(user, pick, live)
            user.emails += 1
            response = self.call("PATCH", "/api/v1/me", headers=api.bearer(self.token_of(session)), json={
                "email": f"owner{user.emails}@example.com",
                "login_password": user.login_password if right else WRONG_LOGIN})
            if not self.usable(session):
                self.refused_unauthenticated(response)
            elif user.login.locked(self.now):
                self.expect_locked(response, "login_locked", user.login)
            elif not right:
                session.live = False
                self.expect_wrong(response, user.login, user.phone, "login_locked", "login_locked")
            else:
                assert response.status_code == 200, response.json
                assert response.json["email"] == f"owner{user.emails}@example.com", response.json
                user.login.clear()
                self.owe(user.phone, "email_changed")

        @rule(who=st.integers(0, 1), new=st.sampled_from(LOGIN_PASSWORDS))
        def recover_by_sms(self, who: int, new: str) -> None:
            user = self.users[who]
            response = self.call("POST", "/api/v1/password-resets", json={
                "phone": user.phone, "sms_code": self.code(user.phone, "recover"), "new_password": new})
            assert response.status_code == 204, response.json
            user.login.clear()
            user.login_password = new
            user.recovered_at = self.now
            self.revoke_all(user)
            user.trusted = dict.fromkeys(user.trusted, False)  # every device proves itself again
            self.owe(user.phone, "password_recovered")

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), live=MOSTLY_LIVE)
        def log_out(self, who: int, pick: int, live: bool) -> None:
            user = self.users[who]
            session = self.pick_session(user, pick, live)
            response = self.call("DELETE", "/api/v1/sessions/current", headers=api.bearer(self.token_of(session)))
            if not self.usable(session):
                self.refused_unauthenticated(response)
            else:
                assert response.status_code == 204, response.get_data(as_text=True)
                session.live = False

        @rule(who=st.integers(0, 1), pick=st.integers(0, 20), device=st.sampled_from(DEVICES))
        def remove_device(self, who: int, pick: int, device: str) -> None:
            user = self.users[who]
            session = self.pick_session(user, pick, True)
            if device not in user.device_ids:
                return
            response = self.call("DELETE", f"/api/v1/devices/{user.device_ids[device]}",
                                 headers=api.bearer(self.token_of(session)))
            if not self.usable(session):
                self.refused_unauthenticated(response)
            elif not user.trusted[device]:  # revoked already (or signed out by a recovery): no such device
                assert (response.status_code, response.json["code"]) == (404, "not_found"), response.json
            else:
                assert response.status_code == 204, response.get_data(as_text=True)
                user.trusted[device] = False
                for other in user.sessions:
                    if other.device == device:
                        other.live = False

        @rule(minutes=st.sampled_from([1, 7, 14, 16, 45, 119, 180, 181, 600, 24 * 60 + 1, 30 * 24 * 60]))
        def wait(self, minutes: int) -> None:
            clock.advance(minutes=minutes)

        @rule(who=st.integers(0, 1), which=st.sampled_from(["login", "payment"]), rounds=st.integers(1, 4))
        def siege(self, who: int, which: str, rounds: int) -> None:
            """A guesser who waits out each lock and starts again: the tenth wrong entry in a row locks for good."""
            user = self.users[who]
            lock = user.login if which == "login" else user.payment
            for _ in range(rounds):
                if lock.hard:
                    return
                if lock.until is not None and lock.until > self.now:
                    clock.set(lock.until)
                while not lock.locked(self.now):
                    if which == "login":
                        self.log_in_once(user, DEVICES[0], right=False, second="none")
                    else:
                        self.pay_once(user, self.users[1 - who], 0, True, right=False)
                        if not user.sessions or not any(self.usable(s) for s in user.sessions):
                            return

        @precondition(lambda self: any(u.login.until or u.payment.until for u in self.users))
        @rule(who=st.integers(0, 1), which=st.sampled_from(["login", "payment"]), early=st.booleans())
        def wait_for_the_lock_to_lift(self, who: int, which: str, early: bool) -> None:
            until = getattr(self.users[who], which).until
            if until is not None and until > self.now:
                clock.set(until - timedelta(seconds=1) if early else until)

        # -- invariants -----------------------------------------------------------------------------------------

        @invariant()
        def tokens_answer_as_the_model_says(self) -> None:
            still: list[tuple[str, datetime, Session]] = []
            for token, expires, session in self.unchecked:
                alive = session.live and self.now < expires
                response = self.call("GET", "/api/v1/me", headers=api.bearer(token))
                if alive:
                    assert response.status_code == 200, response.json
                    still.append((token, expires, session))
                else:  # revoked or expired: refused for good, no need to ask again
                    self.refused_unauthenticated(response)
            self.unchecked = still

        @invariant()
        def balances_match(self) -> None:
            for user in self.users:
                session = next((s for s in user.sessions if self.usable(s)), None)
                if session is not None:
                    wallet = self.call("GET", "/api/v1/wallet", headers=api.bearer(self.token_of(session)))
                    assert wallet.status_code == 200 and wallet.json["available"] == user.balance, (
                        wallet.json, user.balance)

        @invariant()
        def every_alert_owed_was_sent_and_no_other(self) -> None:
            if not self.users:
                return
            phones = {u.phone for u in self.users}
            sent = Counter((m["to"], m["event"]) for m in inbox.messages()
                           if m["to"] in phones and m["event"] in TRACKED)
            assert sent == self.owed, (sent, self.owed)

    run_state_machine_as_test(Accounts, settings=machine_settings("ACCOUNTS_EXAMPLES", 40, 20))


def test_accounts_lockout_sessions_and_devices_follow_the_model(database_url: str, tmp_path: Path) -> None:
    with machine_app(database_url, tmp_path, START) as (app, clock, sms_file):
        run_machine(app, clock, sms_file)
