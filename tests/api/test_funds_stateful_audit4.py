"""A state machine over bank cards, top-ups, withdrawals, transfers and freezes (DESIGN R7, R11, R13, 7.2), driven
through the HTTP API.

Three verified users, each with three card numbers the simulated bank knows (an ordinary one, one ending ``9999``
whose debits the bank refuses, one ending ``8888`` whose payouts fail after being accepted). Hypothesis picks card
bindings (the same card twice, one removed and bound again) and removals (with a top-up or a withdrawal in flight),
top-ups, withdrawals and transfers with amounts around the limits and the right or a wrong payment password, replays
of an Idempotency-Key (with the same body and with another), the workers that finish top-ups and withdrawals, freezes
and lifts through the service ``flask users freeze`` uses, moves of the clock across a China Standard Time midnight,
and what the bank does with the next calls: answer, lose the request (nothing happened) or lose the answer (it acted).

A model written from the DESIGN and the module docstrings keeps every user's available and pending money, their
usage per CST day, their cards, their payment-password lock, each top-up and withdrawal and what the bank holds of
it; every answer is compared with it. After every step: no 5xx was answered, GET /wallet matches the model exactly,
every withdrawal reads as the model says, the cards listed are the model's, the daily usage rows match and the
ledger check (``wallet.check.check_invariants``) is empty. Which withdrawals the worker takes is read from their
``next_attempt_at`` (a random backoff); everything the worker then does with them is predicted.

The limits are lowered (50,000 fen a movement, 120,000 a day) so that a few steps reach them.

About 20 s with the default 40 examples of 25 steps; ``FUNDS_EXAMPLES=150`` explores afresh (random examples, ~5 min).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from core.clock import FrozenClock
from core.db import db
from security import freezes
from tests.api.test_accounts_stateful_audit4 import Lock
from tests.conftest import Api, Inbox
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.factories_ids import make_card_number, make_id_number
from tests.machines import fresh_start, machine_app, machine_settings
from wallet.banks import BankUnavailable, SimulatedBank
from wallet.check import check_invariants
from wallet.funds import process_withdrawals, retry_pending_topups
from wallet.funds_models import DailyUsage, TopUp, Withdrawal
from wallet.limits import CST

T = TypeVar("T")
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 17:00 in China
PER_TRANSACTION, DAILY = 50_000, 120_000
MAX_AGE = timedelta(days=1)
IN_FLIGHT = timedelta(minutes=12)  # wallet.funds._CLAIM + 10 minutes
TOPUP_WORKER_AGE = timedelta(minutes=1)
NAMES = ("张三", "李四", "王五")
KINDS = ("plain", "9999", "8888")  # the simulated bank's rules (DESIGN 7.2): 9999 has no money, 8888 fails payouts
WRONG_PAYMENT = "314159"
AMOUNTS = st.sampled_from([1, 100, 2_500, 30_000, 49_999, 50_000, 50_001, 70_000, 120_001])
MODES = st.sampled_from(["up", "up", "up", "lost_request", "lost_answer"])
MOSTLY = st.sampled_from([True, True, True, True, False])


class FlakyBank:
    """The simulated bank behind a switch: ``up`` answers, ``lost_request`` times out before the bank acts,
    ``lost_answer`` times out after it acted (its answer is lost; a ``PayoutNotFound`` is still an answer)."""

    def __init__(self) -> None:
        self.inner = SimulatedBank(seed=0)
        self.mode = "up"

    def _through(self, call: Callable[[], T]) -> T:
        if self.mode == "lost_request":
            raise BankUnavailable("lost on the way")
        result = call()
        if self.mode == "lost_answer":
            raise BankUnavailable("answer lost")
        return result

    def link_card(self, bank_code: str, card_number: str, holder_name: str) -> str | None:
        return self._through(lambda: self.inner.link_card(bank_code, card_number, holder_name))

    def debit(self, bank_code: str, card_token: str, amount: int, reference: str) -> Any:
        return self._through(lambda: self.inner.debit(bank_code, card_token, amount, reference))

    def payout(self, bank_code: str, card_token: str, amount: int, reference: str) -> Any:
        return self._through(lambda: self.inner.payout(bank_code, card_token, amount, reference))

    def poll_payout(self, reference: str) -> Any:
        return self._through(lambda: self.inner.poll_payout(reference))


@dataclass
class Card:
    number: str
    kind: str
    id: str | None = None  # while bound
    removed_ids: list[str] = field(default_factory=list)


@dataclass
class Money:
    """One top-up or withdrawal the model follows."""

    id: str | None
    user: int
    card_id: str
    kind: str
    amount: int
    created_at: datetime
    status: str = "pending"
    attempts: int = 0
    bank_has: bool = False  # withdrawals: the bank received the payout
    bank_reference: bool = False  # withdrawals: the bank's acceptance was recorded
    submitted_until: datetime | None = None
    failure_reason: str | None = None


@dataclass
class Sent:
    """A money request whose Idempotency-Key has an answer stored: what a replay should get."""

    user: int
    path: str
    key: str
    body: dict[str, Any]
    status: int
    answer: dict[str, Any] | None  # None for a top-up: its answer is built again (the top-up may have settled)
    topup: Money | None = None


@dataclass
class Person:
    phone: str
    name: str
    headers: dict[str, str]
    token_at: datetime
    cards: list[Card]
    user_id: str = ""
    available: int = 0
    pending: int = 0
    frozen: bool = False
    lock: Lock = field(default_factory=Lock)


def day_of(moment: datetime) -> date:
    return moment.astimezone(CST).date()


def run_machine(app: Any, clock: FrozenClock, sms_file: Path) -> None:
    client = app.test_client()
    api = Api(client, Inbox(app))

    class Funds(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            fresh_start(app, clock, sms_file, START)
            self.bank = FlakyBank()
            app.extensions["bank_gateway"] = self.bank
            self.people: list[Person] = []
            self.usage: dict[tuple[str, date], int] = {}
            self.topups: list[Money] = []
            self.withdrawals: list[Money] = []
            self.sent: list[Sent] = []

        # -- plumbing -------------------------------------------------------------------------------------------

        @property
        def now(self) -> datetime:
            return clock.now()

        def call(self, method: str, path: str, **kwargs: Any) -> Any:
            response = client.open(path, method=method, **kwargs)
            assert response.status_code < 500 or (response.status_code == 503 and response.json["code"] == (
                "bank_unavailable")), (method, path, response.status_code, response.get_data(as_text=True))
            return response

        def headers(self, person: Person) -> dict[str, str]:
            """A live access token (15 minutes): an app logs in again on its trusted device once it ran out."""
            if self.now - person.token_at >= timedelta(minutes=14):
                response = self.call("POST", "/api/v1/sessions", json={
                    "phone": person.phone, "login_password": LOGIN_PASSWORD, "device_id": "phone-1"})
                assert response.status_code == 201, response.json
                person.headers, person.token_at = api.bearer(response.json["access_token"]), self.now
            return person.headers

        def money(self, who: int, path: str, body: dict[str, Any], right: bool, key: str | None = None) -> Any:
            person = self.people[who]
            return self.call("POST", path, headers={**self.headers(person), "Idempotency-Key": key or uuid.uuid4().hex},
                             json={**body, "payment_password": PAYMENT_PASSWORD if right else WRONG_PAYMENT})

        def expect(self, response: Any, status: int, code: str) -> None:
            assert (response.status_code, response.json and response.json.get("code")) == (status, code), (
                status, code, response.status_code, response.json)

        def gate(self, person: Person, response: Any, right: bool) -> bool:
            """The payment gate (freeze, then lock, then password), as DESIGN R13 and 4.2 say; True when it passed."""
            if person.frozen:
                self.expect(response, 403, "account_frozen")
                return False
            if person.lock.locked(self.now):
                self.expect(response, 423, "payment_password_locked")
                return False
            if not right:
                if person.lock.fail(self.now):
                    self.expect(response, 423, "payment_password_locked")
                else:
                    self.expect(response, 401, "invalid_credentials")
                    assert response.json["attempts_left"] == person.lock.left(self.now), response.json
                return False
            person.lock.clear()
            return True

        def card_of(self, who: int, pick: int, bound: bool) -> tuple[Card, str] | None:
            """One of the user's cards by id: a bound one, or (``bound`` False) one removed before, if any."""
            person = self.people[who]
            pool = [(c, c.id) for c in person.cards if c.id] if bound else [
                (c, old) for c in person.cards for old in c.removed_ids]
            return pool[pick % len(pool)] if pool else None

        def used(self, who: int, day: date) -> int:
            return self.usage.get((self.people[who].user_id, day), 0)

        def count(self, who: int, day: date, amount: int) -> None:
            key = (self.people[who].user_id, day)
            self.usage[key] = self.usage.get(key, 0) + amount

        def fits(self, who: int, amount: int, day: date) -> bool:
            return amount <= PER_TRANSACTION and self.used(who, day) + amount <= DAILY

        # -- setup ----------------------------------------------------------------------------------------------

        @initialize()
        def three_verified_users(self) -> None:
            for name in NAMES:
                phone = make_phone()
                response = self.call("POST", "/api/v1/users", json={
                    "phone": phone, "sms_code": api.code(phone, "register"), "login_password": LOGIN_PASSWORD,
                    "payment_password": PAYMENT_PASSWORD, "device_id": "phone-1", "locale": "en"})
                assert response.status_code == 201, response.json
                cards = [Card(make_card_number(ending="" if kind == "plain" else kind), kind) for kind in KINDS]
                assert cards[0].number[-4:] not in ("0000", "8888", "9999")
                person = Person(phone, name, api.bearer(response.json["access_token"]), self.now, cards,
                                user_id=response.json["user"]["id"])
                identity = self.call("POST", "/api/v1/me/identity", headers=person.headers,
                                     json={"real_name": name, "id_number": make_id_number()})
                assert identity.status_code in (200, 201), identity.json
                self.people.append(person)
                # Each starts with its ordinary card bound and 1,000.00 topped up (two top-ups within the limit).
                plain = person.cards[0]
                bound = self.call("POST", "/api/v1/me/bank-cards", headers=person.headers, json={
                    "card_number": plain.number, "holder_name": name, "bank_code": "ICBC",
                    "payment_password": PAYMENT_PASSWORD})
                assert bound.status_code == 201, bound.json
                plain.id = bound.json["id"]
                for _ in range(2):
                    key, body = uuid.uuid4().hex, {"amount": PER_TRANSACTION, "bank_card_id": plain.id}
                    topup = self.money(len(self.people) - 1, "/api/v1/topups", body, True, key)
                    assert topup.status_code == 201, topup.json
                    self.topups.append(Money(topup.json["id"], len(self.people) - 1, plain.id, "plain",
                                             PER_TRANSACTION, self.now, status="succeeded"))
                    self.sent.append(Sent(len(self.people) - 1, "/api/v1/topups", key, body, 201, None,
                                          self.topups[-1]))
                person.available = 2 * PER_TRANSACTION

        # -- cards ----------------------------------------------------------------------------------------------

        @rule(who=st.integers(0, 2), which=st.integers(0, 2), right=MOSTLY, mode=MODES)
        def bind_card(self, who: int, which: int, right: bool, mode: str) -> None:
            person, card = self.people[who], self.people[who].cards[which]
            self.bank.mode = mode
            response = self.call("POST", "/api/v1/me/bank-cards", headers=self.headers(person), json={
                "card_number": card.number, "holder_name": person.name, "bank_code": "ICBC",
                "payment_password": PAYMENT_PASSWORD if right else WRONG_PAYMENT})
            self.bank.mode = "up"
            if not self.gate(person, response, right):
                return
            if card.id is not None:
                self.expect(response, 409, "card_already_bound")
            elif mode != "up":
                self.expect(response, 503, "bank_unavailable")
            else:
                assert response.status_code == 201, response.json
                assert response.json["masked"] == f"**** {card.number[-4:]}", response.json
                card.id = response.json["id"]

        @rule(who=st.integers(0, 2), pick=st.integers(0, 5), bound=MOSTLY)
        def remove_card(self, who: int, pick: int, bound: bool) -> None:
            picked = self.card_of(who, pick, bound)
            if picked is None:
                return
            card, card_id = picked
            response = self.call("DELETE", f"/api/v1/me/bank-cards/{card_id}", headers=self.headers(self.people[who]))
            in_flight = [m for m in self.topups + self.withdrawals
                         if m.card_id == card_id and m.status in ("pending", "submitted")]
            if not bound:
                self.expect(response, 404, "card_not_found")
            elif in_flight:
                self.expect(response, 409, "card_in_use")
            else:
                assert response.status_code == 204, response.get_data(as_text=True)
                card.removed_ids.append(card_id)
                card.id = None

        # -- top-ups --------------------------------------------------------------------------------------------

        @rule(who=st.integers(0, 2), pick=st.integers(0, 5), bound=MOSTLY, amount=AMOUNTS, right=MOSTLY, mode=MODES)
        def top_up(self, who: int, pick: int, bound: bool, amount: int, right: bool, mode: str) -> None:
            person = self.people[who]
            picked = self.card_of(who, pick, bound)
            if picked is None:
                return
            card, card_id = picked
            key, body = uuid.uuid4().hex, {"amount": amount, "bank_card_id": card_id}
            self.bank.mode = mode
            response = self.money(who, "/api/v1/topups", body, right, key)
            self.bank.mode = "up"
            if not self.gate(person, response, right):
                return
            if amount > PER_TRANSACTION:
                self.expect(response, 422, "limit_exceeded")
                return
            if not bound:
                self.expect(response, 404, "card_not_found")
                return
            topup = Money(None, who, card_id, card.kind, amount, self.now)
            self.topups.append(topup)
            self.sent.append(Sent(who, "/api/v1/topups", key, body, 201, None, topup))
            self.topup_answered(topup, response, mode)

        def topup_answered(self, topup: Money, response: Any, mode: str) -> None:
            """What a top-up request (first or replayed) answers: the bank's word settles it."""
            if topup.status == "pending" and mode != "up":
                self.expect(response, 503, "bank_unavailable")
                with app.app_context():  # its id, which the 503 does not say
                    known = {t.id for t in self.topups if t.id}
                    ids = [i for i in db.session.scalars(select(TopUp.id).where(TopUp.card_id == topup.card_id))
                           if i not in known]
                    db.session.rollback()
                if topup.id is None:
                    assert len(ids) == 1, ids
                    topup.id = ids[0]
                return
            if topup.status == "pending":
                self.settle_topup(topup)
            if topup.status == "failed":
                self.expect(response, 422, "bank_declined")
                assert response.json["reason"] == "insufficient_funds_at_bank", response.json
                assert topup.id in (None, response.json["topup_id"]), (topup, response.json)
                topup.id = response.json["topup_id"]
            else:
                assert response.status_code == 201, response.json
                assert (response.json["status"], response.json["amount"], response.json["bank_card_id"]) == (
                    "succeeded", topup.amount, topup.card_id), response.json
                assert topup.id in (None, response.json["id"]), (topup, response.json)
                topup.id = response.json["id"]

        def settle_topup(self, topup: Money) -> None:
            if topup.kind == "9999":
                topup.status = "failed"
            else:
                topup.status = "succeeded"
                self.people[topup.user].available += topup.amount

        @precondition(lambda self: any(t.status == "pending" for t in self.topups))
        @rule(mode=MODES)
        def topup_worker(self, mode: str) -> None:
            """``retry_pending_topups``: every pending top-up a minute old whose wait is over is asked again."""
            with app.app_context():
                rows = {t.id: t.next_attempt_at for t in db.session.scalars(select(TopUp))}
                db.session.rollback()
            due = [t for t in self.topups if t.status == "pending" and t.created_at <= self.now - TOPUP_WORKER_AGE
                   and (rows[t.id] is None or rows[t.id] <= self.now)]
            self.bank.mode = mode
            with app.app_context():
                settled = retry_pending_topups()
            self.bank.mode = "up"
            assert settled == (len(due) if mode == "up" else 0), (settled, due, mode)
            if mode == "up":
                for topup in due:
                    self.settle_topup(topup)

        # -- withdrawals ----------------------------------------------------------------------------------------

        @rule(who=st.integers(0, 2), pick=st.integers(0, 5), bound=MOSTLY, amount=AMOUNTS, right=MOSTLY,
              worker=st.sampled_from([None, None, "up", "lost_request", "lost_answer"]))
        def withdraw(self, who: int, pick: int, bound: bool, amount: int, right: bool, worker: str | None) -> None:
            """A withdrawal request, then (``worker``) the withdrawal worker's next round at once."""
            self.withdraw_once(who, pick, bound, amount, right)
            if worker is not None:
                self.withdrawal_worker(worker)

        def withdraw_once(self, who: int, pick: int, bound: bool, amount: int, right: bool) -> None:
            person = self.people[who]
            picked = self.card_of(who, pick, bound)
            if picked is None:
                return
            card, card_id = picked
            key, body = uuid.uuid4().hex, {"amount": amount, "bank_card_id": card_id}
            response = self.money(who, "/api/v1/withdrawals", body, right, key)
            if not self.gate(person, response, right):
                return
            if not bound:
                self.expect(response, 404, "card_not_found")
            elif not self.fits(who, amount, day_of(self.now)):
                self.expect(response, 422, "limit_exceeded")
            elif person.available < amount:
                self.expect(response, 422, "insufficient_funds")
            else:
                assert response.status_code == 202, response.json
                assert (response.json["status"], response.json["amount"]) == ("pending", amount), response.json
                withdrawal = Money(response.json["id"], who, card_id, card.kind, amount, self.now)
                self.withdrawals.append(withdrawal)
                person.available -= amount
                person.pending += amount
                self.count(who, day_of(self.now), amount)
                self.sent.append(Sent(who, "/api/v1/withdrawals", key, body, 202, response.json))

        @precondition(lambda self: any(w.status in ("pending", "submitted") for w in self.withdrawals))
        @rule(mode=MODES)
        def withdrawal_worker(self, mode: str) -> None:
            """``process_withdrawals``: which are due is read (their backoff is random); what happens is predicted."""
            with app.app_context():
                rows = {w.id: (w.next_attempt_at, w.status, w.attempts) for w in db.session.scalars(select(Withdrawal))}
                db.session.rollback()
            due = []
            for w in self.withdrawals:
                if w.status in ("pending", "submitted"):
                    assert rows[w.id][1:] == (w.status, w.attempts), (w, rows[w.id])
                    if rows[w.id][0] <= self.now:
                        due.append(w)
            self.bank.mode = mode
            with app.app_context():
                looked_at = process_withdrawals()
            self.bank.mode = "up"
            assert looked_at == len(due), (looked_at, due)
            for w in due:
                self.advance(w, mode)

        def advance(self, w: Money, mode: str) -> None:
            """``wallet.funds._advance`` as its docstrings describe it, for the bank's ``mode``."""
            frozen, now = self.people[w.user].frozen, self.now
            if w.status == "pending" and frozen and w.attempts == 0:
                self.settle_withdrawal(w, False, "account_frozen")
                return
            w.attempts += 1
            submit = w.status == "pending" and now - w.created_at < MAX_AGE and not frozen
            error: str | None = None
            accepted = False
            if submit:
                w.submitted_until = now + IN_FLIGHT
                if mode == "lost_request":
                    error = "unavailable"
                else:
                    w.bank_has = True
                    if mode == "lost_answer":
                        error = "unavailable"
                    else:
                        accepted = True
            outcome = None
            if error is None:  # poll
                if mode == "lost_request":
                    error = "unavailable"
                elif not w.bank_has:
                    error = "not_found"
                elif mode == "lost_answer":
                    error = "unavailable"
                else:
                    outcome = "failed" if w.kind == "8888" else "succeeded"
            if accepted:
                w.bank_reference, w.status = True, "submitted"
            if outcome is not None:
                self.settle_withdrawal(w, outcome == "succeeded", None if outcome == "succeeded" else "payout_failed")
                return
            assert error is not None
            never_received = error == "not_found" and not w.bank_reference
            in_flight = w.submitted_until is not None and now < w.submitted_until
            frozen_back = never_received and frozen
            if frozen_back and not in_flight:
                self.settle_withdrawal(w, False, "account_frozen")
            elif now - w.created_at < MAX_AGE and not frozen_back:
                if error == "not_found":
                    w.status = "pending"
            elif never_received and not in_flight:
                self.settle_withdrawal(w, False, "bank_never_answered")

        def settle_withdrawal(self, w: Money, succeeded: bool, reason: str | None) -> None:
            person = self.people[w.user]
            person.pending -= w.amount
            if succeeded:
                w.status = "succeeded"
            else:
                w.status, w.failure_reason = "failed", reason
                person.available += w.amount
                self.count(w.user, day_of(w.created_at), -w.amount)

        # -- transfers ------------------------------------------------------------------------------------------

        @rule(who=st.integers(0, 2), to=st.sampled_from([1, 1, 1, 2, 2, 2, 0, -1]), amount=AMOUNTS, right=MOSTLY)
        def transfer(self, who: int, to: int, amount: int, right: bool) -> None:
            """To another user (``to`` 1 or 2 on from ``who``), to oneself (0) or to a number with no account (-1)."""
            person = self.people[who]
            payee = None if to == -1 else (who + to) % 3
            phone = make_phone() if payee is None else self.people[payee].phone
            key, body = uuid.uuid4().hex, {"amount": amount, "to_phone": phone}
            response = self.money(who, "/api/v1/transfers", body, right, key)
            if not self.gate(person, response, right):
                return
            if payee == who:
                self.expect(response, 422, "cannot_pay_self")
            elif not self.fits(who, amount, day_of(self.now)):
                self.expect(response, 422, "limit_exceeded")
            elif person.available < amount:
                self.expect(response, 422, "insufficient_funds")
            elif payee is None:
                self.expect(response, 404, "recipient_not_found")
            else:
                assert response.status_code == 201, response.json
                # The posted balance (its statement line's): money held for a withdrawal is not subtracted.
                assert response.json["balance_after"] == person.available + person.pending - amount, (
                    response.json, person)
                person.available -= amount
                self.people[payee].available += amount
                self.count(who, day_of(self.now), amount)
                self.sent.append(Sent(who, "/api/v1/transfers", key, body, 201, response.json))

        # -- replays --------------------------------------------------------------------------------------------

        @precondition(lambda self: self.sent)
        @rule(pick=st.integers(0, 50), same=MOSTLY, mode=MODES)
        def replay(self, pick: int, same: bool, mode: str) -> None:
            """The same Idempotency-Key again: the same body gets the first answer (a frozen or locked account too),
            another body is refused and moves nothing."""
            sent = self.sent[pick % len(self.sent)]
            person = self.people[sent.user]
            body = sent.body if same else {**sent.body, "amount": sent.body["amount"] + 1}
            self.bank.mode = mode
            response = self.money(sent.user, sent.path, body, True, sent.key)
            self.bank.mode = "up"
            if not person.frozen and not person.lock.locked(self.now):
                person.lock.clear()
            if not same:
                self.expect(response, 422, "idempotency_key_reused")
                return
            if response.status_code < 300:
                assert response.headers.get("Idempotent-Replayed") == "true", response.headers
            if sent.topup is not None:
                self.topup_answered(sent.topup, response, mode)
            else:
                assert (response.status_code, response.json) == (sent.status, sent.answer), response.json

        # -- freezes, the clock ---------------------------------------------------------------------------------

        @rule(who=st.integers(0, 2), freeze=st.booleans())
        def freeze_or_lift(self, who: int, freeze: bool) -> None:
            """What ``flask users freeze`` / ``unfreeze`` call."""
            person = self.people[who]
            with app.app_context():
                if freeze:
                    freezes.freeze(person.user_id, "looked into by risk control")
                else:
                    assert freezes.lift(person.user_id) is person.frozen
            person.frozen = freeze

        @rule(step=st.sampled_from(["1m", "16m", "3h", "before_midnight", "after_midnight", "1d"]))
        def wait(self, step: str) -> None:
            now = self.now
            if step in ("before_midnight", "after_midnight"):
                midnight = datetime.combine(day_of(now) + timedelta(days=1), datetime.min.time(), CST)
                clock.set((midnight + timedelta(seconds=-1 if step == "before_midnight" else 1)).astimezone(UTC))
            else:
                clock.advance(**{"1m": {"minutes": 1}, "16m": {"minutes": 16}, "3h": {"hours": 3, "minutes": 1},
                                 "1d": {"days": 1}}[step])

        # -- invariants -----------------------------------------------------------------------------------------

        @invariant()
        def balances_match(self) -> None:
            for person in self.people:
                wallet = self.call("GET", "/api/v1/wallet", headers=self.headers(person))
                assert wallet.status_code == 200, wallet.json
                assert (wallet.json["available"], wallet.json["pending"]) == (person.available, person.pending), (
                    wallet.json, person)

        @invariant()
        def withdrawals_read_as_the_model_says(self) -> None:
            for w in self.withdrawals:
                got = self.call("GET", f"/api/v1/withdrawals/{w.id}", headers=self.headers(self.people[w.user]))
                assert got.status_code == 200, got.json
                shown = "pending" if w.status == "submitted" else w.status
                assert got.json["status"] in (shown, w.status), (got.json, w)
                assert got.json["failure_reason"] == w.failure_reason, (got.json, w)

        @invariant()
        def cards_listed_are_the_models(self) -> None:
            for person in self.people:
                listed = self.call("GET", "/api/v1/me/bank-cards?limit=50", headers=self.headers(person))
                assert listed.status_code == 200, listed.json
                assert sorted(c["id"] for c in listed.json["data"]) == sorted(c.id for c in person.cards if c.id)

        @invariant()
        def daily_usage_and_the_books(self) -> None:
            with app.app_context():
                rows = {(u.user_id, u.day): u.amount for u in db.session.scalars(select(DailyUsage)) if u.amount}
                db.session.rollback()
                assert rows == {k: v for k, v in self.usage.items() if v}, (rows, self.usage)
                assert all(v <= DAILY for v in rows.values()), rows
                assert check_invariants() == []

    run_state_machine_as_test(Funds, settings=machine_settings("FUNDS_EXAMPLES", 40, 25))


def test_cards_top_ups_withdrawals_transfers_and_freezes_follow_the_model(database_url: str, tmp_path: Path) -> None:
    limits = {"LIMIT_PER_TRANSACTION": PER_TRANSACTION, "LIMIT_DAILY": DAILY}
    with machine_app(database_url, tmp_path, START, **limits) as (app, clock, sms_file):
        saved = app.extensions["bank_gateway"]
        try:
            run_machine(app, clock, sms_file)
        finally:
            app.extensions["bank_gateway"] = saved
