"""A state machine over phone numbers, one-time codes, authenticators and recovery (DESIGN 4.3, README "Security in
one screen"), driven through the HTTP API.

Two users, and numbers that change hands: each may ask for codes of every purpose at its number, an old one, the other
user's or a fresh one; move its account to a fresh number, to one it left, to the other user's (refused) or to its
own; enrol an authenticator, confirm it with the code of the current, the previous or the next time step, a wrong or a
replayed one (enrolling again switches the active one off); log in from a new device with an SMS or an authenticator
code (right, wrong, replayed); recover the login password with or without the authenticator code; reset the payment
password by SMS; use a code sent to a number the account has left; wait. The model, written from the documents
(not from ``security``), keeps which number each account has, the live code of every number and purpose, the login
lock of every number (it is keyed by number), the lock of each account's recoveries (their authenticator codes: not
the login's, since the fifth audit), the recovery hold and the phone-change wait, and the authenticator.
Every answer is compared with it, never a 5xx, the accounts show the number and authenticator state the model says,
no two accounts hold one number, and the outbox holds exactly the codes and alerts owed, each to the right number
(a phone change tells the old number and the new).

About 15 s (SQLite) with the default 35 examples of 25 steps; ``PHONE_TOTP_EXAMPLES=300`` explores afresh
(random examples).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from core.clock import FrozenClock
from core.db import db
from security.models import User
from tests.conftest import Api, Inbox
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.machines import fresh_start, machine_app, machine_settings

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOW, LOCK_FOR, MAX_FAILURES, HARD_AFTER = timedelta(hours=24), timedelta(hours=3), 3, 10
ACCESS_LIFE, REFRESH_LIFE = timedelta(minutes=15), timedelta(days=30)
RECOVERY_HOLD, PHONE_CHANGE_WAIT, CODE_LIFE, CODE_TRIES = timedelta(hours=24), timedelta(hours=24), \
    timedelta(minutes=10), 5
PURPOSES = ("register", "login", "recover", "change_phone")
LOGIN_PASSWORDS = (LOGIN_PASSWORD, "staple gun river 42", "purple monkey dishwasher 9")
PAYMENT_PASSWORDS = ("246813", "975318", "802461")
WRONG_LOGIN = "definitely not it"
HOME = "home-phone"
MOSTLY_RIGHT = st.sampled_from([True] * 5 + [False])  # mostly the right login password (a wrong one ends the session)
# What the model counts, per number: the codes texted and the alerts of these events.
TRACKED = {"sms_code", "account_exists", "phone_changed_old", "phone_changed_new", "totp_enabled", "totp_disabled",
           "held_after_recovery", "password_recovered", "new_device_login", "login_locked", "recovery_locked",
           "payment_password_changed", "registered"}


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class Lock:
    """The login lock of one number (DESIGN 4.2; README on recoveries): a rolling 24-hour window, the third wrong
    entry locks for three hours, ten in a row lock until an SMS reset. The lock of an account's recoveries (their
    wrong authenticator codes) is one too, by the window rule alone (``fail_reset``: no hard lock)."""

    recent: list[datetime] = field(default_factory=list)
    consecutive: int = 0
    until: datetime | None = None
    hard: bool = False

    def locked(self, now: datetime) -> bool:
        return self.hard or (self.until is not None and now < self.until)

    def timed(self, now: datetime) -> bool:
        return self.until is not None and now < self.until

    def window(self, now: datetime) -> list[datetime]:
        return [t for t in self.recent if now - t < WINDOW]

    def fail(self, now: datetime) -> bool:
        """A wrong password or login code; True when it locked."""
        self.consecutive += 1
        if self.consecutive >= HARD_AFTER:
            self.recent, self.until, self.hard = [], None, True
            return True
        self.recent = [*self.window(now), now]
        if len(self.recent) >= MAX_FAILURES:
            self.recent, self.until = [], now + LOCK_FOR
            return True
        return False

    def fail_reset(self, now: datetime) -> bool:
        """A recovery's wrong authenticator code, in the recovery's lock; True when it locked."""
        self.consecutive += 1
        self.recent = [*self.window(now), now]
        if len(self.recent) >= MAX_FAILURES:
            self.recent, self.until = [], now + LOCK_FOR
            return True
        return False

    def left(self, now: datetime) -> int:
        return max(0, min(MAX_FAILURES - len(self.window(now)), HARD_AFTER - self.consecutive))

    def reset_left(self, now: datetime) -> int:
        return max(0, MAX_FAILURES - len(self.window(now)))

    def clear(self) -> None:
        self.recent, self.consecutive, self.until, self.hard = [], 0, None, False


@dataclass
class Code:
    value: str
    expires: datetime
    tries: int = 0


@dataclass
class Account:
    phone: str
    old_phones: list[str] = field(default_factory=list)
    login_password: str = LOGIN_PASSWORD
    trusted: set[str] = field(default_factory=set)
    access: str | None = None
    access_expires: datetime = START
    refresh: str | None = None
    refresh_expires: datetime = START
    device: str = HOME
    recovered_at: datetime | None = None
    phone_changed_at: datetime | None = None
    totp_pending: str | None = None  # the secret of an enrolment (confirmed or not)
    totp_enabled: bool = False
    totp_last_step: int | None = None
    totp_last_code: str | None = None
    devices_made: int = 0
    codes_seen: list[tuple[str, str, str]] = field(default_factory=list)  # (number, purpose, code) texted to it
    recovery_lock: Lock = field(default_factory=Lock)  # its recoveries' authenticator codes (not the login's lock)


def run_machine(app: Any, clock: FrozenClock, sms_file: Path) -> None:
    client = app.test_client()
    inbox = Inbox(app)
    api = Api(client, inbox)

    class PhonesAndAuthenticators(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            fresh_start(app, clock, sms_file, START)
            self.users: list[Account] = []
            self.codes: dict[tuple[str, str], Code] = {}  # the live code of each number and purpose
            self.locks: dict[str, Lock] = {}  # the login lock of each number
            self.owed: Counter[tuple[str, str]] = Counter()
            self.numbers: list[str] = []  # every number the machine used
            self.seen_messages = 0

        # -- plumbing -------------------------------------------------------------------------------------------

        @property
        def now(self) -> datetime:
            return clock.now()

        def call(self, method: str, path: str, **kwargs: Any) -> Any:
            response = client.open(path, method=method, **kwargs)
            assert response.status_code < 500, (method, path, response.status_code, response.get_data(as_text=True))
            return response

        def expect(self, response: Any, status: int, code: str | None = None) -> None:
            got = (response.status_code, response.json["code"] if code is not None else None)
            assert got == (status, code), (response.status_code, response.get_data(as_text=True))

        def owe(self, phone: str, event: str) -> None:
            self.owed[(phone, event)] += 1

        def lock(self, phone: str) -> Lock:
            return self.locks.setdefault(phone, Lock())

        def owner(self, phone: str) -> Account | None:
            return next((u for u in self.users if u.phone == phone), None)

        def fresh_number(self) -> str:
            taken = {u.phone for u in self.users}
            while True:
                phone = make_phone()
                if phone not in taken and phone not in self.numbers:
                    self.numbers.append(phone)
                    return phone

        def number(self, user: Account, which: str) -> str:
            other = self.users[1 - self.users.index(user)]
            if which == "old" and user.old_phones:
                return user.old_phones[-1]
            if which == "other":
                return other.phone
            if which == "fresh":
                return self.fresh_number()
            return user.phone

        def held(self, user: Account) -> datetime | None:
            if user.recovered_at is not None and self.now < user.recovered_at + RECOVERY_HOLD:
                return user.recovered_at + RECOVERY_HOLD
            return None

        def refuse_held(self, user: Account, response: Any) -> None:
            until = self.held(user)
            self.expect(response, 403, "account_recently_recovered")
            assert response.json["available_at"] == iso(until), response.json
            self.owe(user.phone, "held_after_recovery")

        def expect_locked(self, response: Any, lock: Lock, code: str = "login_locked") -> None:
            self.expect(response, 423, code)
            assert response.json["hard_locked"] is lock.hard, (response.json, lock)
            if lock.timed(self.now):
                assert response.json["locked_until"] == iso(lock.until), (response.json, lock)

        def wrong_password(self, user: Account, response: Any) -> None:
            lock = self.lock(user.phone)
            if lock.fail(self.now):
                self.owe(user.phone, "login_locked")
                self.expect_locked(response, lock)
            else:
                self.expect(response, 401, "invalid_credentials")
                assert response.json["attempts_left"] == lock.left(self.now), (response.json, lock)

        # -- codes ----------------------------------------------------------------------------------------------

        def request(self, phone: str, purpose: str) -> str | None:
            """Ask for a code; the model says whether one is texted (and returns it) and what else the number gets."""
            before = len(inbox.messages(to=phone, event="sms_code"))
            response = self.call("POST", "/api/v1/sms-codes", json={"phone": phone, "purpose": purpose})
            self.expect(response, 202)
            has_account = self.owner(phone) is not None
            self.codes.pop((phone, purpose), None)  # only the newest code of a number and purpose works
            texted = has_account == (purpose in ("login", "recover"))
            sent = inbox.messages(to=phone, event="sms_code")
            if not texted:
                assert len(sent) == before, (phone, purpose, sent[before:])
                if purpose == "register":
                    self.owe(phone, "account_exists")
                return None
            assert len(sent) == before + 1, (phone, purpose, has_account)
            self.owe(phone, "sms_code")
            value = inbox.last_code(phone)
            self.codes[(phone, purpose)] = Code(value, self.now + CODE_LIFE)
            owner = self.owner(phone)
            if owner is not None:
                owner.codes_seen.append((phone, purpose, value))
            return value

        def consume(self, phone: str, purpose: str, value: str | None) -> bool:
            """What the model says a try of ``value`` does (DESIGN 4.3: single use, 10 minutes, 5 tries)."""
            code = self.codes.get((phone, purpose))
            if code is None or self.now >= code.expires or code.tries >= CODE_TRIES:
                return False
            if value == code.value:
                del self.codes[(phone, purpose)]
                return True
            code.tries += 1
            return False

        def void(self, phone: str) -> None:
            for purpose in PURPOSES:
                self.codes.pop((phone, purpose), None)

        def wrong_code(self, phone: str, purpose: str) -> str:
            live = self.codes.get((phone, purpose))
            value = int(live.value) if live else 123456
            return f"{(value + 1) % 10**6:06d}"

        # -- sessions -------------------------------------------------------------------------------------------

        def take_tokens(self, user: Account, device: str, body: dict[str, Any]) -> None:
            user.access, user.access_expires = body["access_token"], self.now + ACCESS_LIFE
            user.refresh, user.refresh_expires = body["refresh_token"], self.now + REFRESH_LIFE
            user.device = device

        def revoke(self, user: Account) -> None:
            user.access = user.refresh = None

        def session(self, user: Account) -> dict[str, str] | None:
            """A bearer header that works now, as an app gets one: refresh, or log in again (with an SMS code on a
            device no longer trusted); None while the login is locked."""
            if user.access is not None and self.now < user.access_expires:
                return api.bearer(user.access)
            if user.refresh is not None and self.now < user.refresh_expires:
                response = self.call("POST", "/api/v1/sessions/refresh",
                                     json={"refresh_token": user.refresh, "device_id": user.device})
                assert response.status_code == 200, response.json
                self.take_tokens(user, user.device, response.json)
                return api.bearer(user.access)  # type: ignore[arg-type]
            if self.lock(user.phone).locked(self.now):
                return None
            self.log_in_once(user, HOME, right=True, factor="none" if HOME in user.trusted else "sms")
            return None if user.access is None else api.bearer(user.access)

        # -- authenticator codes --------------------------------------------------------------------------------

        def totp_code(self, user: Account, kind: str) -> str:
            secret = user.totp_pending or pyotp.random_base32()
            totp = pyotp.TOTP(secret)
            step = totp.timecode(self.now)
            if kind == "replay" and user.totp_last_code is not None:
                return user.totp_last_code
            if kind in ("prev", "next"):
                return totp.generate_otp(step + (-1 if kind == "prev" else 1))
            if kind == "wrong":
                window = {totp.generate_otp(step + d) for d in (-1, 0, 1)}
                value = int(totp.generate_otp(step))
                while f"{value:06d}" in window:
                    value = (value + 1) % 10**6
                return f"{value:06d}"
            return totp.generate_otp(step)

        def totp_accepts(self, user: Account, code: str) -> bool:
            """RFC 6238 with ±1 step and replay refusal (DESIGN 4.3); records the step."""
            if user.totp_pending is None:
                return False
            totp = pyotp.TOTP(user.totp_pending)
            step = totp.timecode(self.now)
            for candidate in (step - 1, step, step + 1):
                if totp.generate_otp(candidate) == code:
                    if user.totp_last_step is not None and candidate <= user.totp_last_step:
                        return False
                    user.totp_last_step, user.totp_last_code = candidate, code
                    return True
            return False

        # -- setup ----------------------------------------------------------------------------------------------

        @initialize()
        def register_two(self) -> None:
            for _ in range(2):
                phone = self.fresh_number()
                code = self.request(phone, "register")
                assert code is not None
                self.consume(phone, "register", code)
                response = self.call("POST", "/api/v1/users", json={
                    "phone": phone, "sms_code": code, "login_password": LOGIN_PASSWORD,
                    "payment_password": PAYMENT_PASSWORD, "device_id": HOME, "device_name": HOME, "locale": "en"})
                assert response.status_code == 201, response.json
                user = Account(phone, trusted={HOME})
                self.take_tokens(user, HOME, response.json)
                self.users.append(user)
                self.owe(phone, "registered")

        # -- rules ----------------------------------------------------------------------------------------------

        @rule(who=st.integers(0, 1), which=st.sampled_from(["current", "current", "old", "other", "fresh"]),
              purpose=st.sampled_from(PURPOSES))
        def request_code(self, who: int, which: str, purpose: str) -> None:
            self.request(self.number(self.users[who], which), purpose)

        @rule(who=st.integers(0, 1),
              which=st.sampled_from(["fresh", "fresh", "fresh", "old", "old", "other", "current"]), right=MOSTLY_RIGHT,
              code_kind=st.sampled_from(["asked", "asked", "asked", "wrong", "not_asked"]))
        def change_phone(self, who: int, which: str, right: bool, code_kind: str) -> None:
            user = self.users[who]
            headers = self.session(user)
            if headers is None:
                return
            new = self.number(user, which)
            code = self.request(new, "change_phone") if code_kind != "not_asked" else None
            if code is None or code_kind == "wrong":
                code = self.wrong_code(new, "change_phone")
            response = self.call("PUT", "/api/v1/me/phone", headers=headers, json={
                "new_phone": new, "sms_code": code, "login_password": user.login_password if right else WRONG_LOGIN})
            lock = self.lock(user.phone)
            if lock.locked(self.now):
                self.expect_locked(response, lock)
                return
            if not right:
                self.revoke(user)  # a wrong password entered in a session ends it
                self.wrong_password(user, response)
                return
            lock.clear()
            if self.held(user) is not None:
                self.refuse_held(user, response)
                return
            if not self.consume(new, "change_phone", code):
                self.expect(response, 401, "invalid_sms_code")
                return
            assert self.owner(new) is None, "the model gave a code for a number with an account"
            self.expect(response, 204)
            old = user.phone
            user.old_phones = [p for p in user.old_phones if p != new] + [old]
            user.phone, user.phone_changed_at = new, self.now
            self.lock(new).clear()
            self.void(old)
            self.owe(old, "phone_changed_old")
            self.owe(new, "phone_changed_new")

        @rule(who=st.integers(0, 1), right=MOSTLY_RIGHT)
        def enrol_totp(self, who: int, right: bool) -> None:
            user = self.users[who]
            headers = self.session(user)
            if headers is None:
                return
            response = self.call("POST", "/api/v1/me/totp", headers=headers,
                                 json={"login_password": user.login_password if right else WRONG_LOGIN})
            lock = self.lock(user.phone)
            if lock.locked(self.now):
                self.expect_locked(response, lock)
            elif not right:
                self.revoke(user)
                self.wrong_password(user, response)
            elif self.held(user) is not None:
                lock.clear()
                self.refuse_held(user, response)
            else:
                lock.clear()
                self.expect(response, 201)
                if user.totp_enabled:
                    self.owe(user.phone, "totp_disabled")
                user.totp_pending, user.totp_enabled = response.json["secret"], False
                user.totp_last_step = user.totp_last_code = None
                assert response.json["otpauth_uri"].startswith("otpauth://totp/"), response.json

        @precondition(lambda self: any(u.totp_pending for u in self.users))
        @rule(who=st.integers(0, 1), kind=st.sampled_from(["now", "now", "prev", "next", "wrong", "replay"]))
        def verify_totp(self, who: int, kind: str) -> None:
            self.verify_totp_once(self.users[who], kind)

        @rule(who=st.integers(0, 1), kind=st.sampled_from(["now", "prev", "next"]))
        def enrol_and_confirm_totp(self, who: int, kind: str) -> None:
            """As an app does: enrol, then confirm with the code the authenticator shows."""
            self.enrol_totp(who, True)
            self.verify_totp_once(self.users[who], kind)

        def verify_totp_once(self, user: Account, kind: str) -> None:
            headers = self.session(user)
            if headers is None:
                return
            code = self.totp_code(user, kind)
            response = self.call("POST", "/api/v1/me/totp/verify", headers=headers, json={"code": code})
            if self.held(user) is not None:
                self.refuse_held(user, response)
            elif user.totp_pending is None:
                self.expect(response, 409, "totp_not_enrolled")
            elif not self.totp_accepts(user, code):
                self.expect(response, 401, "invalid_totp_code")
            else:
                assert response.status_code == 200, response.json
                if not user.totp_enabled:
                    user.totp_enabled = True
                    self.owe(user.phone, "totp_enabled")

        @rule(who=st.integers(0, 1), right=MOSTLY_RIGHT,
              factor=st.sampled_from(["sms", "sms", "sms_wrong", "totp", "totp", "totp_wrong", "totp_replay", "none"]))
        def log_in_from_a_new_device(self, who: int, right: bool, factor: str) -> None:
            user = self.users[who]
            if factor == "totp" and not user.totp_enabled:
                factor = "sms"  # an app offers what the account has (the wrong and replayed codes try it anyway)
            user.devices_made += 1
            self.log_in_once(user, f"device-{user.devices_made}", right, factor)

        def log_in_once(self, user: Account, device: str, right: bool, factor: str) -> None:
            body: dict[str, Any] = {"phone": user.phone, "device_id": device, "device_name": device,
                                    "login_password": user.login_password if right else WRONG_LOGIN}
            if factor.startswith("sms"):
                code = self.request(user.phone, "login")
                body["sms_code"] = code if factor == "sms" and code else self.wrong_code(user.phone, "login")
            elif factor.startswith("totp"):
                body["totp_code"] = self.totp_code(user, {"totp": "now", "totp_wrong": "wrong",
                                                          "totp_replay": "replay"}[factor])
            response = self.call("POST", "/api/v1/sessions", json=body)
            lock = self.lock(user.phone)
            if lock.locked(self.now):
                self.expect_locked(response, lock)
                return
            if not right:
                self.wrong_password(user, response)
                return
            if device in user.trusted:
                assert response.status_code == 201, response.json
                lock.clear()
                self.take_tokens(user, device, response.json)
                return
            if "totp_code" in body:
                if not (user.totp_enabled and self.totp_accepts(user, body["totp_code"])):
                    if lock.fail(self.now):  # a wrong authenticator code counts as a wrong password
                        self.owe(user.phone, "login_locked")
                        self.expect_locked(response, lock)
                    else:
                        self.expect(response, 401, "invalid_totp_code")
                        assert response.json["attempts_left"] == lock.left(self.now), (response.json, lock)
                    return
            elif "sms_code" in body:
                if not self.consume(user.phone, "login", body["sms_code"]):
                    self.expect(response, 401, "invalid_sms_code")
                    return
            else:
                self.expect(response, 401, "device_verification_required")
                return
            assert response.status_code == 201, response.json
            lock.clear()
            user.trusted.add(device)
            self.owe(user.phone, "new_device_login")
            self.take_tokens(user, device, response.json)

        @rule(who=st.integers(0, 1), totp_kind=st.sampled_from(["none", "now", "now", "wrong", "replay"]),
              sms_right=MOSTLY_RIGHT, new=st.sampled_from(LOGIN_PASSWORDS))
        def recover(self, who: int, totp_kind: str, sms_right: bool, new: str) -> None:
            user = self.users[who]
            phone = user.phone
            code = self.request(phone, "recover")
            assert code is not None
            body: dict[str, Any] = {"phone": phone, "new_password": new,
                                    "sms_code": code if sms_right else self.wrong_code(phone, "recover")}
            if totp_kind != "none":
                body["totp_code"] = self.totp_code(user, totp_kind)
            response = self.call("POST", "/api/v1/password-resets", json=body)
            if not self.consume(phone, "recover", body["sms_code"]):
                self.expect(response, 401, "invalid_sms_code")
                return
            lock, held_back = self.lock(phone), user.recovery_lock
            if user.totp_enabled:
                if totp_kind == "none":
                    self.expect(response, 401, "totp_required")
                    return
                if held_back.timed(self.now):  # the login's lock, a stranger's perhaps, does not refuse it
                    self.expect_locked(response, held_back, "recovery_locked")
                    return
                if not self.totp_accepts(user, body["totp_code"]):
                    if held_back.fail_reset(self.now):
                        self.owe(phone, "recovery_locked")
                        self.expect_locked(response, held_back, "recovery_locked")
                    else:
                        self.expect(response, 401, "invalid_totp_code")
                        assert response.json["attempts_left"] == held_back.reset_left(self.now), (response.json,
                                                                                                 held_back)
                    return
            else:
                user.recovered_at = self.now  # the SIM alone proved it: the hold starts
                user.totp_pending = None  # an enrolment begun before it is not finished after it
            self.expect(response, 204)
            lock.clear()
            held_back.clear()
            user.login_password = new
            self.revoke(user)
            user.trusted.clear()
            self.owe(phone, "password_recovered")

        @rule(who=st.integers(0, 1), code_kind=st.sampled_from(["right", "wrong", "left_number", "left_number"]),
              new=st.sampled_from(PAYMENT_PASSWORDS))
        def reset_payment_password_by_sms(self, who: int, code_kind: str, new: str) -> None:
            user = self.users[who]
            headers = self.session(user)
            if headers is None:
                return
            if code_kind == "left_number":  # a code texted to a number the account has since left
                left = [c for p, purpose, c in user.codes_seen if purpose == "recover" and p != user.phone]
                if not left:
                    return
                code = left[-1]
                live = self.codes.get((user.phone, "recover"))
                if live is not None and live.value == code:
                    return  # by chance the same six digits as the live code: proves nothing
            else:
                asked = self.request(user.phone, "recover")
                assert asked is not None
                code = asked if code_kind == "right" else self.wrong_code(user.phone, "recover")
            response = self.call("PUT", "/api/v1/me/payment-password", headers=headers,
                                 json={"sms_code": code, "new_payment_password": new})
            waits = []
            if user.phone_changed_at is not None and self.now < user.phone_changed_at + PHONE_CHANGE_WAIT:
                waits.append((user.phone_changed_at + PHONE_CHANGE_WAIT, "phone_changed"))
            held = self.held(user)
            if held is not None:
                waits.append((held, "password_recovered"))
            if waits:
                until, reason = max(waits)
                self.expect(response, 403, "payment_password_reset_too_soon")
                assert (response.json["available_at"], response.json["reason"]) == (iso(until), reason), \
                    response.json
                if held is not None:
                    self.owe(user.phone, "held_after_recovery")
            elif not self.consume(user.phone, "recover", code):
                self.expect(response, 401, "invalid_sms_code")
            else:
                self.expect(response, 204)
                self.owe(user.phone, "payment_password_changed")

        @rule(who=st.integers(0, 1), how=st.sampled_from(["login", "recover"]), move_first=st.booleans())
        def use_a_code_of_a_number_left(self, who: int, how: str, move_first: bool) -> None:
            """A code texted to a number the account has left opens neither the account nor the number's next one.
            With none yet (or ``move_first``): ask for one, then move to a fresh number (as far as the model allows)."""
            user = self.users[who]
            if move_first or not any(p != user.phone for p, purpose, _ in user.codes_seen if purpose == how):
                self.request(user.phone, how)
                self.change_phone(who, "fresh", True, "asked")
            left = [(p, c) for p, purpose, c in user.codes_seen if purpose == how and p != user.phone]
            if not left:
                return
            number, code = left[-1]
            for phone in (user.phone, number):
                live = self.codes.get((phone, how))
                if live is not None and live.value == code:
                    continue  # the same six digits by chance
                owner = self.owner(phone)
                if how == "login":
                    if owner is None or self.lock(phone).locked(self.now):
                        continue
                    owner.devices_made += 1
                    device = f"device-{owner.devices_made}"
                    response = self.call("POST", "/api/v1/sessions", json={
                        "phone": phone, "login_password": owner.login_password, "device_id": device,
                        "sms_code": code})
                    assert not self.consume(phone, how, code)
                    self.expect(response, 401, "invalid_sms_code")
                else:
                    response = self.call("POST", "/api/v1/password-resets", json={
                        "phone": phone, "sms_code": code, "new_password": LOGIN_PASSWORDS[1]})
                    assert not self.consume(phone, how, code)
                    self.expect(response, 401, "invalid_sms_code")

        @rule(minutes=st.sampled_from([1, 9, 11, 16, 180, 181, 24 * 60 - 1, 24 * 60 + 1]))
        def wait(self, minutes: int) -> None:
            clock.advance(minutes=minutes)

        @precondition(lambda self: any(self.held(u) or self.lock(u.phone).timed(self.now) or (
            u.phone_changed_at and self.now < u.phone_changed_at + PHONE_CHANGE_WAIT) for u in self.users))
        @rule(who=st.integers(0, 1), what=st.sampled_from(["hold", "lock", "phone_change"]), early=st.booleans())
        def wait_for_a_wait_to_end(self, who: int, what: str, early: bool) -> None:
            """To the end of the recovery hold, the login lock or the wait after a phone change (or a second before)."""
            user = self.users[who]
            ends = {"hold": self.held(user), "lock": self.lock(user.phone).until,
                    "phone_change": user.phone_changed_at and user.phone_changed_at + PHONE_CHANGE_WAIT}[what]
            if ends is not None and ends > self.now:
                clock.set(ends - timedelta(seconds=1) if early else ends)

        @rule(seconds=st.sampled_from([15, 30, 31, 60]))
        def wait_a_time_step(self, seconds: int) -> None:
            clock.advance(seconds=seconds)

        # -- invariants -----------------------------------------------------------------------------------------

        @invariant()
        def accounts_show_the_model(self) -> None:
            if not self.users:
                return
            with app.app_context():
                rows = db.session.execute(select(User.phone, User.totp_enabled).order_by(User.created_at)).all()
                most = db.session.scalar(select(func.count()).select_from(User).group_by(User.phone)
                                         .order_by(func.count().desc()).limit(1))
            assert most == 1, "two accounts hold one number"
            assert sorted(rows) == sorted((u.phone, u.totp_enabled) for u in self.users), (rows, self.users)
            for user in self.users:
                if user.access is not None and self.now < user.access_expires:
                    me = self.call("GET", "/api/v1/me", headers=api.bearer(user.access))
                    assert me.status_code == 200, me.json
                    assert (me.json["phone"], me.json["totp_enabled"]) == (user.phone, user.totp_enabled), me.json

        @invariant()
        def every_code_and_alert_owed_went_to_its_number_and_no_other(self) -> None:
            if not self.users:
                return
            sent = Counter((m["to"], m["event"]) for m in inbox.messages() if m["event"] in TRACKED)
            assert sent == self.owed, (sent - self.owed, self.owed - sent)

    run_state_machine_as_test(PhonesAndAuthenticators, settings=machine_settings("PHONE_TOTP_EXAMPLES", 35, 25))


def test_phones_codes_authenticators_and_recovery_follow_the_model(database_url: str, tmp_path: Path) -> None:
    with machine_app(database_url, tmp_path, START) as (app, clock, sms_file):
        run_machine(app, clock, sms_file)
