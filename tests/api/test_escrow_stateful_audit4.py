"""A hypothesis state machine over the escrow HTTP API (DESIGN 6, 7) with several users: each of three verified users
buys from and sells to the others, a member of staff decides disputes, and whoever is not a party to a trade (another
user, or staff) keeps touching it. Steps: open, pay and confirm (right and wrong payment password, with no
Idempotency-Key, a fresh one, one replayed, or one first used for another request), cancel, ship, extend, refunds
(before and after shipping, partial or whole, with or without return; agreed, refused, withdrawn, goods sent back and
received), disputes and staff decisions (release, refund, split), ratings, any earlier answer replayed with its key,
and the clock moving, with or without the sweeper.

It keeps its own model of every trade, of each user's payment-password lock (DESIGN 4.2) and of the keys it used, and
checks after every step: every answer is 2xx or a 4xx with a code; a refused step leaves every row of the trades and
every ledger balance as it was; each trade's state, money, refunds and confirm deadline are the model's; each user's
wallet is exactly what they were paid and refunded; the wallets, escrow accounts and fees hold the same total apart
from top-ups; the ledger's own check is clean and every trade's timeline verifies.

Unlike ``tests/integration/test_escrow_stateful.py`` (one buyer, one seller, derandomized, no password or key
mistakes), this one is random on purpose: a failure prints the steps that reproduce it."""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from core.clock import FrozenClock
from core.db import db
from core.sql import Viewing
from tests.api.escrow_helpers import grant_staff, run_sweeper
from tests.factories import PAYMENT_PASSWORD

# The states, spelled out by the first escrow machine so that no model leans on the code it checks.
from tests.integration.test_escrow_stateful import (
    AGREE,
    CLOSED,
    CONFIRM,
    DAY,
    FINISHED,
    OPEN_REFUND,
    PAY,
    RCLOSED,
    RECEIVE,
    REFUSED,
    RETURN,
    SEND,
    SUCCESS,
    UNSHIPPED_PER_SELLER,
    refund_limit_refuses,
    unshipped_in_database,
)
from tests.machines import machine_settings
from wallet import timeline, trades
from wallet.check import check_invariants

FINAL = (FINISHED, CLOSED)
FEE_BP = {0: 150, 1: 0, 2: 100}  # the users' seller fees: two merchants and a person
MAX_TRADES = 6
TOKEN_LIFE = timedelta(minutes=14)  # access tokens live 15 minutes
WRONG_PASSWORD = "000000"
START_BALANCE = 400_000
# Fixed examples by default, as the suite's other machines (a suite that passes passes again; CI gates landing on it);
LOCKED_NOW = "payment_password_locked:by this entry"


OUTCOMES: Counter[str] = Counter()  # what the runs exercised, printed at the end (pytest -s)


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


# --- the model ------------------------------------------------------------------------------------------------------

@dataclass
class PasswordLock:
    """The payment password's lock (DESIGN R3, 4.2): a rolling day, the third wrong entry locks for three hours, ten
    wrong in a row lock for good, a right entry clears everything, nothing is checked while locked."""

    recent: list[datetime] = field(default_factory=list)
    consecutive: int = 0
    locked_until: datetime | None = None
    hard: bool = False

    def locked(self, now: datetime) -> bool:
        return self.hard or (self.locked_until is not None and now < self.locked_until)

    def enter(self, right: bool, now: datetime) -> str | None:
        """The error code of an entry (None: it passed), updating the state."""
        if self.locked(now):
            return "payment_password_locked"
        if right:
            self.recent, self.consecutive, self.locked_until = [], 0, None
            return None
        self.consecutive += 1
        if self.consecutive >= 10:
            self.recent, self.hard = [], True
            return LOCKED_NOW
        self.recent = [t for t in self.recent if now - t < DAY] + [now]
        if len(self.recent) >= 3:
            self.recent, self.locked_until = [], now + timedelta(hours=3)
            return LOCKED_NOW
        return "invalid_credentials"


@dataclass
class RefundModel:
    id: str
    amount: int
    return_goods: bool
    after_shipping: bool
    status: str
    deadline: datetime | None
    disputed: bool = False
    dispute_id: str | None = None


@dataclass
class TradeModel:
    id: str
    buyer: int
    seller: int
    total: int
    fee_bp: int
    status: str
    pay_deadline: datetime
    paid: int = 0
    refunded: int = 0
    released: int = 0
    fee: int = 0
    confirm_deadline: datetime | None = None
    extended: bool = False
    paused_at: datetime | None = None
    finished_at: datetime | None = None
    close_reason: str | None = None
    refunds: list[RefundModel] = field(default_factory=list)
    rated: dict[str, int] = field(default_factory=dict)  # the score each side ("buyer", "seller") gave

    @property
    def held(self) -> int:
        return self.paid - self.refunded - self.released

    def open_refund(self) -> RefundModel | None:
        return next((r for r in self.refunds if r.status in OPEN_REFUND), None)


def refund_deadline(status: str, at: datetime, after_shipping: bool) -> datetime | None:
    return {AGREE: at + (5 * DAY if after_shipping else 2 * DAY), RETURN: at + 7 * DAY, RECEIVE: at + 10 * DAY,
            REFUSED: at + 7 * DAY}.get(status)


def resume(t: TradeModel, at: datetime) -> None:
    if t.paused_at is not None:
        assert t.confirm_deadline is not None
        t.confirm_deadline += max(at - t.paused_at, timedelta(0))
        t.paused_at = None


def finish(t: TradeModel, at: datetime) -> None:
    amount = t.held
    t.released += amount
    t.fee += amount * t.fee_bp // 10_000
    t.status, t.finished_at = FINISHED, at


REFUND_MOVES = {
    (AGREE, "refuse"): REFUSED, (AGREE, "withdraw"): RCLOSED,
    (RETURN, "return"): RECEIVE, (RETURN, "expire"): RCLOSED, (RETURN, "withdraw"): RCLOSED,
    (RECEIVE, "receive"): SUCCESS, (RECEIVE, "expire"): SUCCESS,
    (REFUSED, "expire"): RCLOSED, (REFUSED, "withdraw"): RCLOSED, (REFUSED, "ship"): RCLOSED,
}


def refund_step(t: TradeModel, r: RefundModel, action: str, at: datetime) -> None:
    if r.status == AGREE and action in ("agree", "expire"):
        target = RETURN if r.return_goods else SUCCESS
    else:
        target = REFUND_MOVES.get((r.status, action))
    if target is None:
        raise Refused("illegal_refund_transition")
    r.status, r.deadline = target, refund_deadline(target, at, r.after_shipping)
    if target == SUCCESS:
        t.refunded += r.amount
        if t.held == 0 and t.released == 0:
            t.status, t.paused_at, t.close_reason = CLOSED, None, "refunded"
        else:
            resume(t, at)
    elif target == RCLOSED:
        resume(t, at)


def catch_up(t: TradeModel, now: datetime) -> set[Any]:
    """The deadlines of ``t`` due by ``now``, applied as a party's step (or the sweeper) applies them."""
    applied: set[Any] = set()
    while (r := t.open_refund()) is not None and not r.disputed and r.deadline is not None and r.deadline <= now:
        applied.add((r.id, r.status))
        refund_step(t, r, "expire", r.deadline)
    if t.status == PAY and t.pay_deadline <= now:
        t.status, t.close_reason = CLOSED, "unpaid"
    if (t.status == CONFIRM and t.paused_at is None and t.open_refund() is None and t.confirm_deadline is not None
            and t.confirm_deadline <= now):
        finish(t, t.confirm_deadline)
        applied.add("auto_confirm")
    return applied


# --- the machine ----------------------------------------------------------------------------------------------------

pick = st.integers(0, 9)
actors = st.sampled_from(["party"] * 7 + ["other party", "stranger", "staff"])
rights = st.sampled_from([True, True, True, False])
key_modes = st.sampled_from(["fresh", "fresh", "fresh", "none", "replay", "other", "foreign"])
optional_keys = st.sampled_from(["none", "none", "none", "fresh", "replay", "other", "foreign"])
amount_kinds = st.sampled_from(["held", "part", "part", "one", "over"])
durations = st.one_of(st.integers(1, 90).map(lambda m: timedelta(minutes=m)),
                      st.integers(1, 30).map(lambda h: timedelta(hours=h)),
                      st.integers(1, 12).map(lambda d: timedelta(days=d)))


@dataclass
class Stored:
    """An answer the app keeps under a user's Idempotency-Key."""

    user: int
    key: str
    path: str
    body: dict[str, Any]
    status: int
    answer: dict[str, Any]


class EscrowApiMachine(RuleBasedStateMachine):
    def __init__(self, app: Flask, clock: FrozenClock, api: Any, cast: dict[str, Any]) -> None:
        super().__init__()
        self.app, self.clock, self.api, self.cast = app, clock, api, cast
        self.users: list[dict[str, Any]] = cast["users"]
        self.staff: dict[str, Any] = cast["staff"]
        self.locks: list[PasswordLock] = cast["locks"]  # they outlive a run, as the accounts do
        self.trades: list[TradeModel] = []
        self.stored: list[Stored] = []
        self.unshipped_before = {(b, s): unshipped_in_database(app, buyer["phone"], seller["phone"])
                                 for b, buyer in enumerate(self.users) for s, seller in enumerate(self.users) if b != s}
        self.topups = [0] * len(self.users)
        for i, user in enumerate(self.users):
            short = START_BALANCE - self.api.balance(self.fresh(user))
            if short > 0 and not self.locks[i].locked(self.clock.now()):
                response = self.api.money("/api/v1/topups", user, amount=short, bank_card_id=user["card_id"])
                assert response.status_code == 201, response.json
                self.locks[i].enter(True, self.clock.now())
                self.topups[i] += short
        self.start = [self.api.balance(u) - self.topups[i] for i, u in enumerate(self.users)]
        self.start_fees, self.start_total = self.fees(), self.money_total() - sum(self.topups)
        self.start_reputation = [self.reputation(i) for i in range(len(self.users))]

    # --- plumbing ------------------------------------------------------------------------------------------------

    def fresh(self, who: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        if who.get("logged_in") is None or now - who["logged_in"] >= TOKEN_LIFE:
            self.api.relogin(who)
            who["logged_in"] = now
        return who

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.app.app_context():
            rows = [tuple(row) for row in db.session.execute(text(sql), params)]
            db.session.rollback()
            return rows

    def reputation(self, i: int) -> tuple[int, int, int, int]:
        """A user's credit score and number of ratings as seller, then as buyer, as anyone may read them."""
        user = self.users[i]
        body = self.api.client.get(f"/api/v1/users/{user['user']['id']}/reputation",
                                   headers=self.fresh(user)["headers"]).json
        return (body["as_seller"]["credit_score"], body["as_seller"]["count"], body["as_buyer"]["credit_score"],
                body["as_buyer"]["count"])

    def fees(self) -> int:
        return self.query("SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM ledger_accounts"
                          " WHERE kind = 'fees'")[0][0]

    def money_total(self) -> int:
        return self.query("SELECT coalesce(sum(credits_posted - debits_posted), 0) FROM ledger_accounts"
                          " WHERE kind IN ('wallet', 'escrow', 'fees')")[0][0]

    def snapshot(self, locking: bool = False) -> dict[str, Any]:
        """Every row a step could change: trades, refunds, disputes, ratings, timelines, transfers, balances."""
        return {table: self.query(f"SELECT * FROM {table} ORDER BY 1")  # constant names
                for table in ("trades", "refunds", "disputes", "ratings", "ledger_accounts")} | {
            "timeline": self.query("SELECT count(*) FROM trade_timeline"),
            "transfers": self.query("SELECT count(*) FROM transfers"),
            "idempotency keys": self.query("SELECT count(*) FROM idempotency_keys"),
            # Texts: none for a refused step, except the one telling the owner a wrong entry locked the password.
            "texts": self.query("SELECT count(*) FROM alert_events") if not locking else [],
        }

    def post(self, who: dict[str, Any], path: str, body: dict[str, Any], key: str | None = None) -> Any:
        headers = dict(self.fresh(who)["headers"])
        if key is not None:
            headers["Idempotency-Key"] = key
        response = self.api.client.post(f"/api/v1/{path}", headers=headers, json=body)
        assert response.status_code < 500, (path, response.status_code, response.get_data(as_text=True))
        if response.status_code >= 400:
            assert response.status_code < 500 and (response.json or {}).get("code"), \
                (path, response.status_code, response.get_data(as_text=True))
        return response

    def pick_trade(self, n: int, *states: str) -> TradeModel:
        going = [t for t in self.trades if t.status not in FINAL]
        ready = [t for t in going if t.status in states and not t.open_refund()]
        pool = ready if ready and n < 6 else going if going and n < 8 else self.trades
        return pool[n % len(pool)]

    def who(self, t: TradeModel, actor: str, role: str) -> tuple[dict[str, Any], int | None, str]:
        """The acting account for ``actor`` on ``t`` where ``role`` ("buyer", "seller", "either") may act: the user,
        their index (None for staff) and what they are to the trade."""
        if actor == "staff":
            return self.staff, None, "stranger"
        if actor == "stranger":
            i = next(i for i in range(len(self.users)) if i not in (t.buyer, t.seller))
            return self.users[i], i, "stranger"
        right = t.seller if role == "seller" else t.buyer
        i = right if actor == "party" else (t.buyer if right == t.seller else t.seller)
        return self.users[i], i, "buyer" if i == t.buyer else "seller"

    def key_for(self, mode: str, user: int | None, path: str, body: dict[str, Any]) -> tuple[str | None, Any]:
        """A key for a step, and what the app holds under it (a ``Stored``, "other" for another request's, None)."""
        if mode == "none":
            return None, None
        mine = [s for s in self.stored if s.user == user]
        if mode == "replay":
            same = [s for s in mine if s.path == path and s.body == body]
            if same:
                return same[-1].key, same[-1]
        if mode == "other":
            others = [s for s in mine if (s.path, s.body) != (path, body)]
            if others:
                return others[-1].key, "other"
        if mode == "foreign":  # another user's key is no business of this one's: a request of its own
            foreign = [s for s in self.stored if s.user != user and s.key not in {m.key for m in mine}]
            if foreign:
                return foreign[-1].key, None
        return uuid.uuid4().hex, None

    def step(self, t: TradeModel | None, predict: Any, call: Any, *, user: int | None = None,
             path: str = "", body: dict[str, Any] | None = None, key: str | None = None, held_by: Any = None,
             gate: str | None = None, replayable_when_locked: bool = True) -> Any:
        """Run one step: the model's trade caught up to now and ``predict(model, applied)`` (raising ``Refused``) give
        the expected outcome; ``gate`` is the payment password's verdict (None: passed, or no password asked), which
        comes first; ``held_by`` what the key already holds. A refused step must leave every row as it was."""
        now = self.clock.now()
        model = copy.deepcopy(t) if t is not None else None
        expected: Any = None
        want: str | None = None
        replay: Stored | None = None
        if gate == "payment_password_locked" and isinstance(held_by, Stored) and replayable_when_locked:
            replay = held_by  # a retry of a request that went through answers what happened, lock or not
        elif gate is not None:
            want = gate.partition(":")[0]
        elif held_by == "other":
            want = "idempotency_key_reused"
        elif isinstance(held_by, Stored):
            replay = held_by
        else:
            try:
                applied = catch_up(model, now) if model is not None else set()
                expected = predict(model, applied)
            except Refused as refused:
                want = refused.code
        if gate == "payment_password_locked" and held_by == "other" and replayable_when_locked:
            want = "idempotency_key_reused"  # the lock's refusal looks for the key's answer first
        locking = gate == LOCKED_NOW
        before = self.snapshot(locking) if want is not None or replay is not None else None
        response = call()
        got = response.json.get("code") if response.status_code >= 400 else None
        action = "open" if path == "trades" else "decide" if path.startswith("admin") else path.rsplit("/", 1)[-1]
        OUTCOMES[f"{action}: {got or ('replayed' if replay else 'ok')}"] += 1
        assert got == want, (f"{path}: expected {want or 'success'}, got {response.status_code} {response.json};"
                             f" model {t}")
        if replay is not None:
            assert (response.status_code, response.json) == (replay.status, replay.answer), (path, response.json)
            assert response.headers.get("Idempotent-Replayed") == "true"
        if before is not None:
            after = self.snapshot(locking)
            changed = [name for name in before if before[name] != after[name]]
            assert not changed, f"{path}: refused or replayed, yet it changed {changed}"
            return None, response
        if key is not None:
            assert response.headers.get("Idempotent-Replayed") is None
            self.stored.append(Stored(user, key, path, body or {}, response.status_code, response.json))
        if t is not None:
            assert model is not None
            self.trades[self.trades.index(t)] = model
            self.answer_shows(response.json, model)
        return expected, response

    @staticmethod
    def answer_shows(answer: dict[str, Any], t: TradeModel) -> None:
        """A step's answer shows the trade (or the refund) as the step left it."""
        if answer.get("id") == t.id:
            seen = (answer["status"], answer["paid_amount"], answer["refunded_amount"], answer["released_amount"],
                    answer["fee_amount"], [(r["id"], r["status"]) for r in answer["refunds"]])
            assert seen == (t.status, t.paid, t.refunded, t.released, t.fee,
                            [(r.id, r.status) for r in t.refunds if r.id != "?"]), (answer, t)
        elif str(answer.get("id", "")).startswith("rfd_"):
            refund = next(r for r in t.refunds if r.id in (answer["id"], "?"))  # "?": the one just asked for
            assert (answer["status"], answer["amount"], at(answer["deadline"])) == (
                refund.status, refund.amount, refund.deadline), (answer, t)

    def password(self, user: int | None, right: bool) -> tuple[str, str | None]:
        """The password to send and the gate's verdict, for a user (staff never pay here)."""
        assert user is not None
        return (PAYMENT_PASSWORD if right else WRONG_PASSWORD), self.locks[user].enter(right, self.clock.now())

    # --- rules: opening, paying, the trade's steps ---------------------------------------------------------------

    @initialize(buyer=st.integers(0, 2), offset=st.integers(1, 2), amount=st.integers(1, 30_000),
                then=st.sampled_from(["", "pay", "pay, ship"]))
    def first_trade(self, buyer: int, offset: int, amount: int, then: str) -> None:
        self.open(buyer, offset, amount, 1000, "fresh", then)

    @precondition(lambda self: len(self.trades) < MAX_TRADES)
    @rule(buyer=st.integers(0, 2), offset=st.integers(0, 2),
          amount=st.one_of(st.integers(1, 30_000), st.integers(1, 30_000), st.integers(300_000, 800_000)),
          shipping_fee=st.sampled_from([0, 1, 1000]), key=optional_keys,
          then=st.sampled_from(["", "pay", "pay, ship", "pay, ship"]),
          story=st.sampled_from([None, None, "agree", "refuse", "dispute", "decide"]), x=st.integers(0, 10**6),
          return_goods=st.booleans())
    def open(self, buyer: int, offset: int, amount: int, shipping_fee: int, key: str, then: str,
             story: str | None = None, x: int = 0, return_goods: bool = False) -> None:
        """Opened (offset 0: with the buyer's own number), and sometimes paid, or paid and shipped, at once; and then
        (to reach the later steps more often) sometimes a refund asked for and answered by the seller at once."""
        seller = (buyer + offset) % 3
        body = {"seller_phone": self.users[seller]["phone"], "title": "A lamp", "amount": amount,
                "shipping_fee": shipping_fee}
        key_value = uuid.uuid4().hex if key == "fresh" else None

        def predict(_m: Any, _applied: Any) -> None:
            if seller == buyer:
                raise Refused("seller_not_found")

        _, response = self.step(None, predict, lambda: self.post(self.users[buyer], "trades", body, key_value),
                                user=buyer, path="trades", body=body, key=key_value)
        if seller == buyer:
            return
        assert response.status_code == 201
        t = TradeModel(id=response.json["id"], buyer=buyer, seller=seller, total=amount + shipping_fee,
                       fee_bp=FEE_BP[seller], status=PAY, pay_deadline=self.clock.now() + DAY)
        self.trades.append(t)
        if then:
            self.pay_trade(t, "party", True, "fresh", card=amount > 30_000)
        if then == "pay, ship":
            self.ship_trade(self.trades[-1], "party", "none")
        if then and story:
            self.request_refund(0, "party", "part" if x % 2 else "held", x, return_goods, "none", story,
                                only=self.trades[-1])

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, right=rights, key=key_modes, card=st.booleans())
    def pay(self, n: int, actor: str, right: bool, key: str, card: bool) -> None:
        self.pay_trade(self.pick_trade(n, PAY), actor, right, key, card)

    def balance_of(self, i: int) -> int:
        return self.start[i] + self.topups[i] + sum(
            (t.refunded - t.paid if t.buyer == i else 0) + (t.released - t.fee if t.seller == i else 0)
            for t in self.trades)

    def guarded_step(self, t: TradeModel, actor: str, role: str, right: bool, key_mode: str, action: str,
                     predict: Any, key_required: bool = True, card: bool = False) -> Any:
        """A step behind the payment password (pay, confirm: the key is required; agree, receive: optional). ``card``:
        pay with the caller's card topping up what the wallet lacks (``prepare`` below)."""
        who, user, _ = self.who(t, actor, role)
        if user is None:  # staff are no party to pay as: another user stands in for them here
            who, user, _ = self.who(t, "stranger", role)
        assert user is not None
        path, body = f"trades/{t.id}/{action}", ({"bank_card_id": who["card_id"]} if card else {})
        key, held_by = self.key_for(key_mode, user, path, body)
        if key is None and key_required:
            return self.step(t, predict, lambda: self.post(who, path, {"payment_password": PAYMENT_PASSWORD, **body}),
                             gate="idempotency_key_missing", path=path)
        password, gate = self.password(user, right)
        if key is None:
            held_by = None
        if card and gate is None and held_by is None:
            # The card is charged (before the payment, in a transaction of its own) only for a payment that goes
            # through: the buyer's, of a trade still payable, for what the wallet lacks.
            now = self.clock.now()
            if user == t.buyer and t.status == PAY and t.pay_deadline > now:
                self.topups[user] += max(0, t.total - self.balance_of(user))
        # Without a key, a locked password is refused (there is no answer to look for).
        return self.step(t, predict, lambda: self.post(who, path, {"payment_password": password, **body}, key),
                         user=user, path=path, body=body, key=key if held_by is None else None, held_by=held_by,
                         gate=gate, replayable_when_locked=key is not None)

    def pay_trade(self, t: TradeModel, actor: str, right: bool, key_mode: str, card: bool = False) -> None:
        def predict(m: TradeModel, _applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != "buyer":
                raise Refused("buyer_only")
            if m.status != PAY:
                raise Refused("trade_not_payable")
            if self.unshipped_before[m.buyer, m.seller] + sum(
                    (u.buyer, u.seller, u.status) == (m.buyer, m.seller, SEND) for u in self.trades
            ) >= UNSHIPPED_PER_SELLER:
                raise Refused("unshipped_trade_limit")
            if self.balance_of(m.buyer) < m.total:
                raise Refused("insufficient_funds")
            m.status, m.paid = SEND, m.total

        relation = self.relation(t, actor, "buyer")
        self.guarded_step(t, actor, "buyer", right, key_mode, "pay", predict, card=card)

    def current(self, t: TradeModel) -> TradeModel:
        """The model of ``t`` now (a step replaces a trade's model with the one it caught up and changed)."""
        return next(u for u in self.trades if u.id == t.id)

    def relation(self, t: TradeModel, actor: str, role: str) -> str:
        _, user, relation = self.who(t, actor, role)
        if user is None:
            return "stranger"
        return relation

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, key=optional_keys)
    def cancel(self, n: int, actor: str, key: str) -> None:
        t = self.pick_trade(n, PAY)
        relation = self.relation(t, actor, "either")

        def predict(m: TradeModel, _applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if m.status != PAY:
                raise Refused("trade_not_cancellable")
            m.status, m.close_reason = CLOSED, "cancelled"

        self.plain_step(t, actor, "either", "cancel", {}, key, predict)

    def plain_step(self, t: TradeModel, actor: str, role: str, path: str, body: dict[str, Any], key_mode: str,
                   predict: Any) -> Any:
        """A step without a password, its key optional."""
        who, user, _ = self.who(t, actor, role)
        path = f"trades/{t.id}/{path}"
        key, held_by = self.key_for(key_mode, user, path, body)
        return self.step(t, predict, lambda: self.post(who, path, body, key), user=user, path=path, body=body,
                         key=key if held_by is None else None, held_by=held_by)

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, key=optional_keys)
    def ship(self, n: int, actor: str, key: str) -> None:
        self.ship_trade(self.pick_trade(n, SEND), actor, key)

    def ship_trade(self, t: TradeModel, actor: str, key: str) -> None:
        now = self.clock.now()
        relation = self.relation(t, actor, "seller")

        def predict(m: TradeModel, _applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != "seller":
                raise Refused("seller_only")
            if m.status != SEND:
                raise Refused("trade_not_shippable")
            if r := m.open_refund():
                if r.status != REFUSED or r.after_shipping or r.disputed:
                    raise Refused("refund_in_progress")
                refund_step(m, r, "ship", now)
            m.status, m.confirm_deadline = CONFIRM, now + 10 * DAY

        self.plain_step(t, actor, "seller", "ship", {"carrier": "SF", "tracking_number": "SF1"}, key, predict)

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, key=optional_keys)
    def extend(self, n: int, actor: str, key: str) -> None:
        t = self.pick_trade(n, CONFIRM)
        relation = self.relation(t, actor, "buyer")

        def predict(m: TradeModel, _applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != "buyer":
                raise Refused("buyer_only")
            if m.status != CONFIRM:
                raise Refused("trade_not_extendable")
            if m.open_refund():
                raise Refused("refund_in_progress")
            if m.extended:
                raise Refused("already_extended")
            assert m.confirm_deadline is not None
            m.confirm_deadline += 5 * DAY
            m.extended = True

        self.plain_step(t, actor, "buyer", "extend", {}, key, predict)

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, right=rights, key=key_modes)
    def confirm(self, n: int, actor: str, right: bool, key: str) -> None:
        t = self.pick_trade(n, CONFIRM)
        now = self.clock.now()
        relation = self.relation(t, actor, "buyer")

        def predict(m: TradeModel, applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != "buyer":
                raise Refused("buyer_only")
            if "auto_confirm" in applied:
                return
            if m.status != CONFIRM:
                raise Refused("trade_not_confirmable")
            if m.open_refund():
                raise Refused("refund_in_progress")
            finish(m, now)

        self.guarded_step(t, actor, "buyer", right, key, "confirm", predict)

    # --- rules: refunds ------------------------------------------------------------------------------------------

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, kind=amount_kinds, x=st.integers(0, 10**6), return_goods=st.booleans(),
          key=optional_keys, then=st.sampled_from([None, "agree", "refuse", "dispute", "decide"]))
    def request_refund(self, n: int, actor: str, kind: str, x: int, return_goods: bool, key: str,
                       then: str | None, only: TradeModel | None = None) -> None:
        """Asked for, and (to reach the later steps more often) sometimes answered by the seller at once: agreed,
        refused, refused and taken to the platform, and that decided by staff."""
        now = self.clock.now()
        t = self.current(only) if only is not None else self.pick_trade(n, SEND, CONFIRM)
        held = copy.deepcopy(t)
        catch_up(held, now)
        amount = max(1, {"held": held.held, "part": 1 + x % max(held.held, 1), "one": 1,
                         "over": held.held + 1 + x % 1000}[kind])
        relation = self.relation(t, actor, "buyer")

        def predict(m: TradeModel, _applied: Any) -> RefundModel:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != "buyer":
                raise Refused("buyer_only")
            if m.status not in (SEND, CONFIRM):
                raise Refused("trade_not_refundable")
            if m.open_refund():
                raise Refused("refund_in_progress")
            shipped = m.status == CONFIRM
            if refund_limit_refuses(m, amount, shipped):
                raise Refused("refund_limit_reached")
            if return_goods and not shipped:
                raise Refused("nothing_to_return")
            if amount > m.held:
                raise Refused("refund_exceeds_held")
            refund = RefundModel("?", amount, return_goods, shipped, AGREE, refund_deadline(AGREE, now, shipped))
            m.refunds.append(refund)
            if shipped and m.paused_at is None:
                m.paused_at = now
            return refund

        refund, response = self.plain_step(t, actor, "buyer", "refunds", {
            "amount": amount, "reason": "scratched", "return_goods": return_goods}, key, predict)
        if refund is None:
            return
        assert response.status_code == 201
        refund.id = response.json["id"]
        if then is None:
            return
        t = self.current(t)
        if then == "agree":
            self.seller_agrees(0, 0, "party", True, "none", then_return=True, only=t)
            t = self.current(t)
            if x % 3 and t.refunds[-1].status == RECEIVE:
                self.seller_receives_return(0, 0, "party", True, "none", only=t)
            return
        self.seller_refuses(0, 0, "party", "none", only=t)
        if then in ("dispute", "decide"):
            self.open_dispute(0, "party", "none", only=t)
        if then == "decide":
            self.staff_decide(0, "split" if x % 3 else "refund", "part", x, "staff", "none", only=t)

    def pick_refund(self, n: int, r: int, states: tuple[str, ...],
                    only: TradeModel | None = None) -> tuple[TradeModel, str] | None:
        asked = [t for t in self.trades if t.refunds and (only is None or t.id == only.id)]
        if not asked:
            return None
        ready = [t for t in asked if (o := t.open_refund()) and o.status in states]
        pool = ready if ready and n < 7 else asked
        t = pool[n % len(pool)]
        if r == 3:  # another trade's refund, or none
            other = [x.id for u in self.trades if u is not t for x in u.refunds]
            return t, other[0] if other else "rfd_nonexistent"
        return t, t.refunds[-1 - r % len(t.refunds)].id

    def refund_action(self, n: int, r: int, actor: str, role: str, action: str, path: str, states: tuple[str, ...],
                      body: dict[str, Any], key: str, right: bool | None = None, silence: str | None = None,
                      only: TradeModel | None = None) -> None:
        picked = self.pick_refund(n, r, states, only)
        if picked is None:
            return
        t, refund_id = picked
        now = self.clock.now()
        relation = self.relation(t, actor, role)

        def predict(m: TradeModel, applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != role:
                raise Refused(f"{role}_only")
            refund = next((x for x in m.refunds if x.id == refund_id), None)
            if refund is None:
                raise Refused("not_found")
            if silence is not None and (refund_id, silence) in applied:
                return
            if action == "withdraw" and refund.disputed and refund.status in OPEN_REFUND:
                raise Refused("dispute_open")
            refund_step(m, refund, action, now)

        full = f"refunds/{refund_id}/{path}"
        if right is None:
            self.plain_step(t, actor, role, full, body, key, predict)
        else:
            self.guarded_step(t, actor, role, right, key, full, predict, key_required=False)

    @rule(n=pick, r=st.integers(0, 3), actor=actors, right=rights,
          key=st.sampled_from(["none", "none", "fresh", "replay", "other"]))
    def seller_agrees(self, n: int, r: int, actor: str, right: bool, key: str, then_return: bool = False,
                      only: TradeModel | None = None) -> None:
        self.refund_action(n, r, actor, "seller", "agree", "agree", (AGREE,), {}, key, right, silence=AGREE,
                           only=only)
        if only is not None and then_return:
            t = self.current(only)
            if t.refunds[-1].status == RETURN:
                self.buyer_returns_goods(n, 0, "party", "none", only=t)

    @rule(n=pick, r=st.integers(0, 3), actor=actors, key=optional_keys)
    def seller_refuses(self, n: int, r: int, actor: str, key: str, only: TradeModel | None = None) -> None:
        self.refund_action(n, r, actor, "seller", "refuse", "refuse", (AGREE,), {"reason": "it was fine"}, key,
                           only=only)

    @rule(n=pick, r=st.integers(0, 3), actor=actors, key=optional_keys)
    def buyer_withdraws(self, n: int, r: int, actor: str, key: str) -> None:
        self.refund_action(n, r, actor, "buyer", "withdraw", "withdraw", (AGREE, REFUSED, RETURN), {}, key)

    @rule(n=pick, r=st.integers(0, 3), actor=actors, key=optional_keys)
    def buyer_returns_goods(self, n: int, r: int, actor: str, key: str, only: TradeModel | None = None) -> None:
        self.refund_action(n, r, actor, "buyer", "return", "return", (RETURN,),
                           {"carrier": "EMS", "tracking_number": "E1"}, key, only=only)

    @rule(n=pick, r=st.integers(0, 3), actor=actors, right=rights,
          key=st.sampled_from(["none", "none", "fresh", "replay"]))
    def seller_receives_return(self, n: int, r: int, actor: str, right: bool, key: str,
                               only: TradeModel | None = None) -> None:
        self.refund_action(n, r, actor, "seller", "receive", "receive-return", (RECEIVE,), {}, key, right,
                           silence=RECEIVE, only=only)

    # --- rules: disputes, ratings --------------------------------------------------------------------------------

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, key=optional_keys)
    def open_dispute(self, n: int, actor: str, key: str, only: TradeModel | None = None) -> None:
        refused = [t for t in self.trades if (r := t.open_refund()) and r.status == REFUSED and not r.disputed]
        t = self.current(only) if only else refused[n % len(refused)] if refused and n < 7 else self.pick_trade(n)
        relation = self.relation(t, actor, "buyer")

        def predict(m: TradeModel, _applied: Any) -> RefundModel:
            if relation == "stranger":
                raise Refused("not_found")
            if relation != "buyer":
                raise Refused("buyer_only")
            refund = m.open_refund()
            if refund is None or refund.status != REFUSED or refund.disputed:
                raise Refused("no_refused_refund")
            refund.disputed, refund.deadline = True, None
            return refund

        refund, response = self.plain_step(t, actor, "buyer", "disputes", {"reason": "not as described"}, key,
                                           predict)
        if refund is not None:
            refund.dispute_id = response.json["id"]

    @precondition(lambda self: any(r.dispute_id for t in self.trades for r in t.refunds))
    @rule(n=pick, outcome=st.sampled_from(["release", "refund", "split", "split"]), kind=amount_kinds,
          x=st.integers(0, 10**6), by=st.sampled_from(["staff"] * 4 + ["party"]), key=optional_keys)
    def staff_decide(self, n: int, outcome: str, kind: str, x: int, by: str, key: str,
                     only: TradeModel | None = None) -> None:
        disputed = [t for t in self.trades if any(r.dispute_id for r in t.refunds)
                    and (only is None or t.id == only.id)]
        if not disputed:
            return
        undecided = [t for t in disputed if t.status not in FINAL]
        t = (undecided if undecided and n < 7 else disputed)[n % len(undecided if undecided and n < 7 else disputed)]
        dispute_id = next(r.dispute_id for r in reversed(t.refunds) if r.dispute_id)
        now = self.clock.now()
        amount = max(1, {"held": t.held, "part": 1 + x % max(t.held, 1), "one": 1,
                         "over": t.held + 1 + x % 1000}[kind])
        body: dict[str, Any] = {"outcome": outcome, "reason": "the photos"}
        if outcome == "split" or kind == "one":
            body["refund_amount"] = amount

        def predict(m: TradeModel, _applied: Any) -> None:
            if by != "staff":
                raise Refused("forbidden")
            refund = next(r for r in m.refunds if r.dispute_id == dispute_id)
            if refund.status not in OPEN_REFUND:
                raise Refused("dispute_decided")
            to_buyer = {"release": 0, "refund": m.held, "split": amount}[outcome]
            if outcome == "split" and not 0 < amount < m.held:
                raise Refused("invalid_split")
            if outcome != "split" and "refund_amount" in body and amount != to_buyer:
                raise Refused("refund_amount_mismatch")
            m.refunded += to_buyer
            finish(m, now)  # what is left goes to the seller, less the fee
            if not m.released:
                m.status, m.finished_at, m.close_reason = CLOSED, None, "refunded"
            refund.status, refund.deadline = (SUCCESS if to_buyer else RCLOSED), None
            m.paused_at = None

        who = self.staff if by == "staff" else self.users[t.buyer]
        key_value = uuid.uuid4().hex if key == "fresh" else None
        path = f"admin/disputes/{dispute_id}/decide"
        # Staff decide without a catch-up: a disputed refund stops every clock the trade has.
        self.step(t, lambda m, _a: predict(m, set()), lambda: self.post(who, path, body, key_value),
                  user=None if by == "staff" else t.buyer, path=path, body=body, key=key_value)

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, score=st.sampled_from([-1, 0, 1]), key=optional_keys)
    def rate(self, n: int, actor: str, score: int, key: str) -> None:
        finished = [t for t in self.trades if t.status == FINISHED]
        t = finished[n % len(finished)] if finished and n < 6 else self.pick_trade(n)
        now = self.clock.now()
        relation = self.relation(t, actor, "buyer")

        def predict(m: TradeModel, _applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")
            if m.status != FINISHED or m.finished_at is None or now > m.finished_at + 15 * DAY:
                raise Refused("rating_closed")
            if relation in m.rated:
                raise Refused("already_rated")
            m.rated[relation] = score

        self.plain_step(t, actor, "buyer", "ratings", {"score": score}, key, predict)

    @precondition(lambda self: self.trades)
    @rule(n=pick, actor=actors, key=optional_keys)
    def add_evidence(self, n: int, actor: str, key: str) -> None:
        """Either party may add evidence, whatever the state (it is kept for a dispute); a stranger may not."""
        t = self.pick_trade(n)
        relation = self.relation(t, actor, "either")

        def predict(_m: TradeModel, _applied: Any) -> None:
            if relation == "stranger":
                raise Refused("not_found")

        self.plain_step(t, actor, "either", "evidence", {"text": "a photo of the parcel"}, key, predict)

    # --- rules: retries, strangers, time -------------------------------------------------------------------------

    @precondition(lambda self: self.stored)
    @rule(i=st.integers(0, 10**6), right=rights)
    def retry(self, i: int, right: bool) -> None:
        """Any answered request again with its key: the first answer, nothing done twice. One behind the payment
        password still checks it (a wrong one is refused; a lock answers what happened)."""
        stored = self.stored[i % len(self.stored)]
        who = self.staff if stored.user is None else self.users[stored.user]
        body = dict(stored.body)
        gate = None
        guarded = stored.path.endswith(("/pay", "/confirm", "/agree", "/receive-return"))
        if guarded:
            password, gate = self.password(stored.user, right)
            body["payment_password"] = password
        self.step(None, None, lambda: self.post(who, stored.path, body, stored.key), path=stored.path,
                  held_by=stored, gate=gate)

    @precondition(lambda self: self.trades)
    @rule(n=pick, what=st.sampled_from(["", "/timeline", "/evidence-bundle"]), staff=st.booleans())
    def stranger_reads(self, n: int, what: str, staff: bool) -> None:
        """A trade is no business of a user who is not a party to it (404, never 403); staff may read it."""
        t = self.pick_trade(n)
        who = self.staff if staff else self.users[next(i for i in range(3) if i not in (t.buyer, t.seller))]
        response = self.api.client.get(f"/api/v1/trades/{t.id}{what}", headers=self.fresh(who)["headers"])
        if staff:
            assert response.status_code == 200, response.json
        else:
            assert (response.status_code, response.json["code"]) == (404, "not_found"), response.json

    @rule(delta=durations, sweep=st.booleans())
    def time_passes(self, delta: timedelta, sweep: bool) -> None:
        self.clock.advance(delta)
        OUTCOMES["time passes" + (", swept" if sweep else "")] += 1
        if sweep:
            self.sweep()

    def sweep(self) -> None:
        run_sweeper(self.app)
        now = self.clock.now()
        for t in self.trades:
            while catch_up(t, now):
                pass

    # --- after every step ----------------------------------------------------------------------------------------

    @invariant()
    def trades_are_as_modelled(self) -> None:
        for t in self.trades:
            buyer = self.fresh(self.users[t.buyer])
            body = self.api.client.get(f"/api/v1/trades/{t.id}", headers=buyer["headers"]).json
            seen = (body["status"], body["paid_amount"], body["refunded_amount"], body["released_amount"],
                    body["fee_amount"], body["extended"], at(body["deadlines"]["confirm_by"]),
                    body["deadlines"]["paused"], at(body["finished_at"]), body["close_reason"],
                    [(r["id"], r["status"], r["amount"], at(r["deadline"]), r["disputed"]) for r in body["refunds"]])
            expected = (t.status, t.paid, t.refunded, t.released, t.fee, t.extended,
                        t.confirm_deadline if t.status == CONFIRM else None, t.paused_at is not None, t.finished_at,
                        t.close_reason, [(r.id, r.status, r.amount, r.deadline, r.disputed) for r in t.refunds])
            assert seen == expected, f"trade {t.id} at {self.clock.now()}:\n app   {seen}\n model {expected}"
            assert t.status not in FINAL or t.held == 0

    @invariant()
    def money_is_where_the_model_says(self) -> None:
        accounts = dict(self.query("SELECT owner, credits_posted - debits_posted FROM ledger_accounts"
                                   " WHERE kind IN ('wallet', 'escrow')"))
        for i, user in enumerate(self.users):
            assert accounts.get(user["user"]["id"], 0) == self.balance_of(i), (i, self.trades)
        for t in self.trades:
            assert accounts.get(t.id, 0) == t.held, t
        assert self.fees() == self.start_fees + sum(t.fee for t in self.trades)
        assert self.money_total() == self.start_total + sum(self.topups)

    @invariant()
    def reputations_count_every_rating_once(self) -> None:
        for i in range(len(self.users)):
            as_seller = [t.rated["buyer"] for t in self.trades if t.seller == i and "buyer" in t.rated]
            as_buyer = [t.rated["seller"] for t in self.trades if t.buyer == i and "seller" in t.rated]
            start = self.start_reputation[i]
            assert self.reputation(i) == (start[0] + sum(as_seller), start[1] + len(as_seller),
                                          start[2] + sum(as_buyer), start[3] + len(as_buyer)), i

    @invariant()
    def books_and_timelines_check(self) -> None:
        with self.app.app_context():
            problems = check_invariants()
            assert not problems, problems
            for t in self.trades:
                record, rows = trades.get_trade_with_timeline(Viewing("operator", staff=True), t.id)
                verified = timeline.verify(record, rows)
                assert verified.intact, (t.id, verified)
            db.session.rollback()

    def teardown(self) -> None:
        # Nothing left due for the next run: every deadline passes (disputes wait for staff, who never come back).
        self.clock.advance(days=60)
        run_sweeper(self.app)


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_random_escrow_steps_over_http_keep_every_promise(app: Flask, clock: FrozenClock, api: Any) -> None:
    users = [api.verified(real_name=name, locale="en") for name in ("李四", "王五", "赵六")]
    for i, user in enumerate(users):
        if FEE_BP[i]:
            assert app.test_cli_runner().invoke(args=["users", "set-fee", user["phone"], str(FEE_BP[i])]).exit_code == 0
    cast = {"users": users, "staff": grant_staff(api, app), "locks": [PasswordLock() for _ in users]}
    run_state_machine_as_test(
        lambda: EscrowApiMachine(app, clock, api, cast),
        settings=machine_settings("ESCROW_HTTP_MACHINE_EXAMPLES", 60, 30),
    )
    print(sorted(OUTCOMES.items()))


def test_withdrawing_a_refund_the_platform_decided_is_not_told_the_platform_is_deciding(api, people, staff):
    """Found while writing the machine above: a buyer withdrawing a refund whose dispute staff had already decided was
    answered 409 ``dispute_open`` ("the platform is deciding this refund"), so a client showed a decided refund as
    waiting for the platform. It is settled: ``illegal_refund_transition``, as for any refund no longer open."""
    from tests.api.escrow_helpers import disputed, paid_and_shipped

    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    refund, dispute = disputed(api, buyer, seller, trade_id)
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute['id']}/decide", headers=staff["headers"],
                              json={"outcome": "release", "reason": "as described"})
    assert decided.status_code == 200, decided.json
    withdrawn = api.client.post(f"/api/v1/trades/{trade_id}/refunds/{refund['id']}/withdraw",
                                headers=buyer["headers"], json={})
    assert (withdrawn.status_code, withdrawn.json["code"]) == (409, "illegal_refund_transition")
