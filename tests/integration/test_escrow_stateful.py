"""A hypothesis state machine drives escrow trades over HTTP (DESIGN 6): a few open trades, each step one party's
move on one of them (pay, cancel, ship, confirm, extend, refunds asked for, agreed, refused, withdrawn, goods sent
back and received, disputes opened and decided by staff, ratings), time passing by minutes to days and the sweeper.
A plain-Python model of every trade (its state, money, refunds and deadlines, the deadlines applied as
``wallet.trades._catch_up`` and the sweeper apply them) predicts each answer, and after every step the app must
agree with it: every answer is 2xx or a 4xx with a code, money is conserved and each escrow account holds paid -
refunded - released, a final trade never moves money again, ``flask wallet check`` is clean and every timeline
verifies."""

from __future__ import annotations

import copy
import itertools
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from flask import Flask
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text as sa_text

from core.clock import FrozenClock
from core.db import db
from tests.api.escrow_helpers import PP, escrow_balance, grant_staff, run_sweeper
from wallet import ledger
from wallet.models import FEES

# The trade states and refund states of wallet.escrow, spelled out so the model does not lean on the code it checks.
PAY, SEND, CONFIRM, FINISHED, CLOSED = ("WAIT_BUYER_PAY", "WAIT_SELLER_SEND_GOODS", "WAIT_BUYER_CONFIRM_GOODS",
                                        "TRADE_FINISHED", "TRADE_CLOSED")
AGREE, REFUSED, RETURN, RECEIVE, SUCCESS, RCLOSED = ("WAIT_SELLER_AGREE", "SELLER_REFUSE_BUYER",
                                                     "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS",
                                                     "REFUND_SUCCESS", "REFUND_CLOSED")
OPEN_REFUND = (AGREE, REFUSED, RETURN, RECEIVE)
DAY = timedelta(days=1)
FEE_BP = 150  # the seller is a merchant: a fee, rounded down, on whatever is released
MAX_TRADES = 6
REFUNDS_PER_TRADE = 3  # ESCROW_REFUND_REQUESTS_PER_TRADE


def refund_limit_refuses(m: Any, amount: int, shipped: bool) -> bool:
    """The product rule of ``wallet.trades._check_request_limit`` for a trade model ``m`` (this machine's or the HTTP
    one's): every request counts, however it ended; before shipping one more is taken, once, if it asks for everything
    still held."""
    asked = len(m.refunds)
    return not (asked < REFUNDS_PER_TRADE or (not shipped and asked == REFUNDS_PER_TRADE and amount == m.held))


UNSHIPPED_PER_SELLER = 10  # ESCROW_MAX_UNSHIPPED_TRADES_PER_SELLER


def unshipped_in_database(app: Flask, buyer_phone: str, seller_phone: str) -> int:
    """Paid trades of the buyer waiting for the seller to ship, as stored: those a previous run left count too
    (``wallet.trades._check_unshipped``), and the parties outlive a run."""
    with app.app_context():
        return db.session.execute(sa_text(
            "SELECT count(*) FROM trades t JOIN users b ON b.id = t.buyer_id JOIN users s ON s.id = t.seller_id"
            " WHERE b.phone = :buyer AND s.phone = :seller AND t.status = 'WAIT_SELLER_SEND_GOODS'"),
            {"buyer": buyer_phone, "seller": seller_phone}).scalar_one()


# ESCROW_MACHINE_EXAMPLES=500 explores more, with fresh random runs each time (and no coverage assertion).
EXPLORE = int(os.environ.get("ESCROW_MACHINE_EXAMPLES", "0"))
TOKEN_LIFE = timedelta(minutes=14)  # access tokens live 15 minutes; log in again a minute before that


class Refused(Exception):
    """The model's prediction that the app refuses a step with ``code``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


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
    """What a trade should be (DESIGN 6, the issue, the documented API), as of the last time the app wrote it."""

    id: str
    total: int
    status: str
    pay_deadline: datetime
    paid: int = 0
    refunded: int = 0
    released: int = 0
    fee: int = 0
    confirm_deadline: datetime | None = None
    remind_at: datetime | None = None
    extended: bool = False
    reminded: bool = False
    reminders: int = 0
    paused_at: datetime | None = None
    finished_at: datetime | None = None
    close_reason: str | None = None
    refunds: list[RefundModel] = field(default_factory=list)
    rated: set[str] = field(default_factory=set)
    # Money once the trade became final: it must never change again.
    final_money: tuple[int, int, int, int] | None = None

    @property
    def held(self) -> int:
        return self.paid - self.refunded - self.released

    def open_refund(self) -> RefundModel | None:
        return next((r for r in self.refunds if r.status in OPEN_REFUND), None)

    def money(self) -> tuple[int, int, int, int]:
        return self.paid, self.refunded, self.released, self.fee


# --- the model's rules (DESIGN 6 + the issue) ---------------------------------------------------------------------

def refund_deadline(status: str, at: datetime, after_shipping: bool) -> datetime | None:
    return {
        AGREE: at + (5 * DAY if after_shipping else 2 * DAY),  # seller silent = agreed
        RETURN: at + 7 * DAY,  # buyer never sends the goods back = refund lapses
        RECEIVE: at + 10 * DAY,  # seller silent on returned goods = received
        REFUSED: at + 7 * DAY,  # refusal never escalated = refund lapses
    }.get(status)


def resume(t: TradeModel, at: datetime) -> None:
    if t.paused_at is None:
        return
    assert t.confirm_deadline is not None and t.remind_at is not None
    moved = max(at - t.paused_at, timedelta(0))
    if moved:  # a deadline that moved is reminded of again: a reminder sent before named the old one
        t.reminded = False
    t.confirm_deadline += moved
    t.remind_at += moved
    t.paused_at = None


def release(t: TradeModel, amount: int) -> None:
    t.released += amount
    t.fee += amount * FEE_BP // 10_000


def finish(t: TradeModel, now: datetime) -> None:
    release(t, t.held)
    t.status, t.finished_at = FINISHED, now


def refund_step(t: TradeModel, r: RefundModel, action: str, at: datetime, now: datetime) -> None:
    moves = {
        (AGREE, "agree"): RETURN if r.return_goods else SUCCESS,
        (AGREE, "expire"): RETURN if r.return_goods else SUCCESS,
        (AGREE, "refuse"): REFUSED,
        (AGREE, "withdraw"): RCLOSED,
        (RETURN, "return"): RECEIVE,
        (RETURN, "expire"): RCLOSED,
        (RETURN, "withdraw"): RCLOSED,
        (RECEIVE, "receive"): SUCCESS,
        (RECEIVE, "expire"): SUCCESS,
        (REFUSED, "expire"): RCLOSED,
        (REFUSED, "withdraw"): RCLOSED,
        (REFUSED, "ship"): RCLOSED,  # a request made before shipping, not disputed: see ``ship_trade``
    }
    target = moves.get((r.status, action))
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
    """Apply every deadline of ``t`` that has passed by ``now``, in the order they fall due; what was applied."""
    applied: set[Any] = set()
    while (r := t.open_refund()) is not None and not r.disputed and r.deadline is not None and r.deadline <= now:
        applied.add((r.id, r.status))
        refund_step(t, r, "expire", r.deadline, now)
    if t.status == PAY and t.pay_deadline <= now:
        t.status, t.close_reason = CLOSED, "unpaid"
        applied.add("expire")
    if (t.status == CONFIRM and t.paused_at is None and t.open_refund() is None and t.confirm_deadline is not None
            and t.confirm_deadline <= now):
        finish(t, t.confirm_deadline)  # finished as of the deadline, however late it is applied
        applied.add("auto_confirm")
    return applied


def sweep_pass(t: TradeModel, now: datetime) -> list[str]:
    """One pass of the sweeper over ``t``: its jobs in their order (unpaid, reminder, auto-confirm, one refund
    deadline); what it did. Reminders are the sweeper's alone: a party's step never sends one."""
    done = []
    if t.status == PAY and t.pay_deadline <= now:
        t.status, t.close_reason = CLOSED, "unpaid"
        done.append("expire")
    if (t.status == CONFIRM and t.paused_at is None and not t.reminded and t.remind_at and t.remind_at <= now
            and t.confirm_deadline is not None and t.confirm_deadline > now):  # never of a deadline already past
        t.reminded, t.reminders = True, t.reminders + 1
        done.append("reminder")
    if (t.status == CONFIRM and t.paused_at is None and t.open_refund() is None and t.confirm_deadline is not None
            and t.confirm_deadline <= now):
        finish(t, t.confirm_deadline)
        done.append("auto_confirm")
    if (r := t.open_refund()) is not None and not r.disputed and r.deadline is not None and r.deadline <= now:
        done.append(r.status)
        refund_step(t, r, "expire", r.deadline, now)
    return done


# --- the machine --------------------------------------------------------------------------------------------------

trade_pick = st.integers(0, 7)
refund_pick = st.integers(0, 3)  # 0: the latest refund (mostly the open one); more: an older one
durations = st.one_of(st.integers(1, 120).map(lambda m: timedelta(minutes=m)),
                      st.integers(1, 30).map(lambda h: timedelta(hours=h)),
                      st.integers(1, 12 * 24).map(lambda h: timedelta(hours=h)))
amount_kinds = st.sampled_from(["held", "part", "one", "over"])


class EscrowMachine(RuleBasedStateMachine):
    outcomes: ClassVar[Counter[str]] = Counter()
    runs: ClassVar[Iterator[int]] = itertools.count()

    def __init__(self, app: Flask, clock: FrozenClock, api: Any, cast: dict[str, Any]) -> None:
        super().__init__()
        self.app, self.clock, self.api = app, clock, api
        self.buyer, self.seller, self.staff = cast["buyer"], cast["seller"], cast["staff"]
        self.run = next(self.runs)
        self.trades: list[TradeModel] = []
        self.logged_in: dict[str, datetime] = {}
        self.unshipped_before = unshipped_in_database(app, self.buyer["phone"], self.seller["phone"])
        for who in (self.buyer, self.seller, self.staff):
            self.fresh(who)
        # The parties are shared by the runs: their balances are where the previous run left them (money held by
        # trades a seller never shipped stays held), so the buyer tops up enough for this run's trades first.
        short = MAX_TRADES * 31_000 - self.api.balance(self.buyer)
        if short > 0:
            topped = self.api.money("/api/v1/topups", self.buyer, amount=short, bank_card_id=self.buyer["card_id"])
            assert topped.status_code == 201, topped.json
        self.start = {"buyer": self.api.balance(self.buyer), "seller": self.api.balance(self.seller),
                      "fees": self.fees_balance()}

    # --- plumbing ---------------------------------------------------------------------------------------------

    def fresh(self, who: dict[str, Any]) -> dict[str, Any]:
        now = self.clock.now()
        if now - self.logged_in.get(who["phone"], datetime.min.replace(tzinfo=now.tzinfo)) >= TOKEN_LIFE:
            self.api.relogin(who)
            self.logged_in[who["phone"]] = now
        return who

    def fees_balance(self) -> int:
        with self.app.app_context():  # the platform's fees are spread over shards
            return sum(ledger.balance(ledger.system_account(FEES, "platform", "CNY", shard)).available
                       for shard in range(ledger.SHARDS[FEES]))

    def post(self, who: dict[str, Any], path: str, key: bool = False, **body: Any):
        headers = dict(self.fresh(who)["headers"])
        if key:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        response = self.api.client.post(f"/api/v1/{path}", headers=headers, json=body)
        self.answer_is_sound(response)
        return response

    def get(self, who: dict[str, Any], path: str) -> dict[str, Any]:
        response = self.api.client.get(f"/api/v1/{path}", headers=self.fresh(who)["headers"])
        assert response.status_code == 200, (path, response.status_code, response.json)
        return response.json

    @staticmethod
    def answer_is_sound(response: Any) -> None:
        assert response.status_code < 500, (response.status_code, response.get_data(as_text=True))
        if response.status_code >= 400:
            assert 400 <= response.status_code < 500 and response.json and response.json.get("code"), \
                (response.status_code, response.get_data(as_text=True))

    def pick(self, n: int, *states: str) -> TradeModel:
        """Mostly a trade in one of ``states`` (where the step can go through), else one still going, sometimes
        any, a finished one included (where it cannot)."""
        going = [t for t in self.trades if t.status not in (FINISHED, CLOSED)]
        ready = [t for t in going if t.status in states and not t.open_refund()]
        pool = ready if ready and n < 4 else going if going and n < 6 else self.trades
        return pool[n % len(pool)]

    def pick_refund(self, n: int, r: int, pool: list[TradeModel] | None = None,
                    states: tuple[str, ...] = ()) -> tuple[TradeModel, str]:
        """A trade with a refund (mostly one open in one of ``states``, or open) and a refund of it: mostly the
        latest, sometimes older."""
        asked = [t for t in self.trades if t.refunds]
        going = [t for t in asked if t.open_refund()]
        ready = [t for t in going if t.refunds[-1].status in states]
        pool = pool or (ready if ready and n < 4 else going if going and n < 6 else asked)
        t = pool[n % len(pool)]
        return t, t.refunds[-1 - r % len(t.refunds)].id

    def step(self, name: str, t: TradeModel, predict, call) -> Any:
        """Catch the model's trade up to now, ``predict(model, applied)`` (raising ``Refused(code)``), ``call()``
        the app, and compare: the model keeps the caught-up trade only when the app's step went through (a
        refused step rolls its catch-up back)."""
        now = self.clock.now()
        model = copy.deepcopy(t)
        applied = catch_up(model, now)
        try:
            expected = predict(model, applied)
            want = None
        except Refused as refused:
            want, expected = refused.code, None
        response = call()
        got = response.json.get("code") if response.status_code >= 400 else None
        self.outcomes[f"{name}: {got or 'ok'}"] += 1
        assert got == want, (f"{name} on {t.id}: the model expected {want or 'success'}, the app answered "
                             f"{response.status_code} {response.json}; model before: {t}; caught up: {model}")
        if want is None:
            self.trades[self.trades.index(t)] = model
            if model.status in (FINISHED, CLOSED) and model.final_money is None:
                model.final_money = model.money()
        return expected, response

    # --- rules: opening and the trade's own steps ---------------------------------------------------------------

    @initialize(first=st.lists(st.tuples(st.integers(1, 30_000), st.sampled_from([0, 1, 1000]),
                                         st.sampled_from(["", "pay", "pay, ship"])), min_size=1, max_size=3))
    def first_trades(self, first: list[tuple[int, int, str]]) -> None:
        """Every run starts with a trade or more (a run whose rules happen to leave out opening one would only
        watch the clock)."""
        for amount, shipping_fee, then in first:
            self.open(amount, shipping_fee, then)

    @precondition(lambda self: len(self.trades) < MAX_TRADES
                  and sum(t.status not in (FINISHED, CLOSED) for t in self.trades) < 4)
    @rule(amount=st.integers(1, 30_000), shipping_fee=st.sampled_from([0, 1, 1000]),
          then=st.sampled_from(["", "pay", "pay, ship"]))
    def open(self, amount: int, shipping_fee: int, then: str) -> None:
        """Opened, and (to reach the later states more often) paid or paid and shipped at once."""
        response = self.post(self.buyer, "trades", seller_phone=self.seller["phone"], title=f"Lamp {self.run}",
                             amount=amount, shipping_fee=shipping_fee)
        assert response.status_code == 201, response.json
        self.outcomes["open: ok"] += 1
        self.trades.append(TradeModel(id=response.json["id"], total=amount + shipping_fee, status=PAY,
                                      pay_deadline=self.clock.now() + timedelta(hours=24)))
        if then:
            self.pay_trade(self.trades[-1])
        if then == "pay, ship":
            self.ship_trade(self.trades[-1])

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick)
    def pay(self, n: int) -> None:
        self.pay_trade(self.pick(n, PAY))

    def pay_trade(self, t: TradeModel) -> None:
        def predict(m: TradeModel, applied: set[Any]) -> None:
            if m.status != PAY:
                raise Refused("trade_not_payable")
            if self.unshipped_before + sum(u.status == SEND for u in self.trades) >= UNSHIPPED_PER_SELLER:
                raise Refused("unshipped_trade_limit")
            m.status, m.paid = SEND, m.total

        self.step("pay", t, predict, lambda: self.post(self.buyer, f"trades/{t.id}/pay", key=True, **PP))

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick, by_seller=st.booleans())
    def cancel(self, n: int, by_seller: bool) -> None:
        def predict(m: TradeModel, applied: set[Any]) -> None:
            if m.status != PAY:
                raise Refused("trade_not_cancellable")
            m.status, m.close_reason = CLOSED, "cancelled"

        t = self.pick(n, PAY)
        who = self.seller if by_seller else self.buyer
        self.step("cancel", t, predict, lambda: self.post(who, f"trades/{t.id}/cancel"))

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick)
    def ship(self, n: int) -> None:
        self.ship_trade(self.pick(n, SEND))

    def ship_trade(self, t: TradeModel) -> None:
        now = self.clock.now()

        def predict(m: TradeModel, applied: set[Any]) -> None:
            if m.status != SEND:
                raise Refused("trade_not_shippable")
            if r := m.open_refund():
                if r.status != REFUSED or r.after_shipping or r.disputed:
                    raise Refused("refund_in_progress")
                refund_step(m, r, "ship", now, now)  # the seller ships over their refusal: the request closes
            m.status, m.confirm_deadline, m.remind_at = CONFIRM, now + 10 * DAY, now + 7 * DAY

        self.step("ship", t, predict, lambda: self.post(self.seller, f"trades/{t.id}/ship", carrier="SF",
                                                        tracking_number=f"SF{self.run}"))

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick, rate=st.sampled_from([None, "buyer", "seller"]))
    def confirm(self, n: int, rate: str | None) -> None:
        """Confirmed, and (to reach ratings more often) rated at once."""
        t = self.confirm_trade(n)
        if rate:
            self.rate_trade(t, by_seller=rate == "seller", score=1)

    def confirm_trade(self, n: int) -> TradeModel:
        now = self.clock.now()

        def predict(m: TradeModel, applied: set[Any]) -> None:
            if "auto_confirm" in applied:
                return  # the deadline confirmed it first: the buyer gets the finished trade
            if m.status != CONFIRM:
                raise Refused("trade_not_confirmable")
            if m.open_refund():
                raise Refused("refund_in_progress")
            finish(m, now)

        t = self.pick(n, CONFIRM)
        self.step("confirm", t, predict, lambda: self.post(self.buyer, f"trades/{t.id}/confirm", key=True, **PP))
        return next(x for x in self.trades if x.id == t.id)

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick)
    def extend(self, n: int) -> None:
        def predict(m: TradeModel, applied: set[Any]) -> None:
            if m.status != CONFIRM:
                raise Refused("trade_not_extendable")
            if m.open_refund():
                raise Refused("refund_in_progress")
            if m.extended:
                raise Refused("already_extended")
            assert m.confirm_deadline is not None
            m.confirm_deadline += 5 * DAY
            m.remind_at, m.extended, m.reminded = m.confirm_deadline - 3 * DAY, True, False

        t = self.pick(n, CONFIRM)
        self.step("extend", t, predict, lambda: self.post(self.buyer, f"trades/{t.id}/extend"))

    # --- rules: refunds ----------------------------------------------------------------------------------------

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick, kind=amount_kinds, x=st.integers(1, 1_000_000), return_goods=st.booleans())
    def request_refund(self, n: int, kind: str, x: int, return_goods: bool) -> None:
        now = self.clock.now()
        t = self.pick(n, SEND, CONFIRM)
        caught_up = copy.deepcopy(t)
        catch_up(caught_up, now)
        held = caught_up.held
        amount = {"held": held, "part": 1 + x % max(held, 1), "one": 1, "over": held + 1 + x % 1000}[kind] or 1

        def predict(m: TradeModel, applied: set[Any]) -> RefundModel:
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
            refund = RefundModel(id="?", amount=amount, return_goods=return_goods, after_shipping=shipped,
                                 status=AGREE, deadline=refund_deadline(AGREE, now, shipped))
            m.refunds.append(refund)
            if shipped and m.paused_at is None:
                m.paused_at = now
            return refund

        refund, response = self.step("request_refund", t, predict, lambda: self.post(
            self.buyer, f"trades/{t.id}/refunds", amount=amount, reason="scratched", return_goods=return_goods))
        if refund is not None:
            assert response.status_code == 201
            refund.id = response.json["id"]

    def refund_rule(self, name: str, who: dict[str, Any], n: int, r: int, action: str, path: str,
                    done_by_silence: str | None = None, password: bool = False,
                    pool: list[TradeModel] | None = None, states: tuple[str, ...] = (), **body: Any) -> TradeModel:
        now = self.clock.now()
        t, refund_id = self.pick_refund(n, r, pool, states)

        def predict(m: TradeModel, applied: set[Any]) -> None:
            refund = next(x for x in m.refunds if x.id == refund_id)
            if done_by_silence is not None and (refund_id, done_by_silence) in applied:
                return  # the seller's silence already did what the seller asks
            if action == "withdraw" and refund.disputed and refund.status in OPEN_REFUND:
                raise Refused("dispute_open")
            refund_step(m, refund, action, now, now)

        extra = {**PP} if password else {}
        self.step(name, t, predict, lambda: self.post(who, f"trades/{t.id}/refunds/{refund_id}/{path}",
                                                      **extra, **body))
        return next(x for x in self.trades if x.id == t.id)

    @precondition(lambda self: any(t.refunds for t in self.trades))
    @rule(n=trade_pick, r=refund_pick, then_return=st.booleans())
    def seller_agrees(self, n: int, r: int, then_return: bool) -> None:
        """Agreed, and (to reach the return's later steps more often) the goods sent back at once."""
        t = self.refund_rule("agree", self.seller, n, r, "agree", "agree", done_by_silence=AGREE, password=True,
                             states=(AGREE,))
        if then_return and (refund := t.open_refund()) is not None and refund.status == RETURN:
            self.refund_rule("return", self.buyer, self.trades.index(t), 0, "return", "return", carrier="EMS",
                             tracking_number="E1", pool=[t])

    @precondition(lambda self: any(t.refunds for t in self.trades))
    @rule(n=trade_pick, r=refund_pick,
          escalate=st.sampled_from([None, "buyer", "seller", "release", "refund", "split"]))
    def seller_refuses(self, n: int, r: int, escalate: str | None) -> None:
        """Refused, and (to reach the platform more often) taken to it at once."""
        t = self.refund_rule("refuse", self.seller, n, r, "refuse", "refuse", reason="it was fine", states=(AGREE,))
        if escalate:
            self.dispute_trade(t, by_seller=escalate == "seller")
            t = next(x for x in self.trades if x.id == t.id)
            if escalate == "buyer":  # and then thinks better of it: too late, the platform decides
                self.refund_rule("withdraw", self.buyer, 0, 0, "withdraw", "withdraw", pool=[t])
            elif escalate != "seller" and any(r.dispute_id for r in t.refunds):  # and staff decide at once
                self.decide_trade(t, escalate, "part", 7)

    @precondition(lambda self: any(t.refunds for t in self.trades))
    @rule(n=trade_pick, r=refund_pick)
    def buyer_withdraws(self, n: int, r: int) -> None:
        self.refund_rule("withdraw", self.buyer, n, r, "withdraw", "withdraw", states=(AGREE, REFUSED, RETURN))

    @precondition(lambda self: any(t.refunds for t in self.trades))
    @rule(n=trade_pick, r=refund_pick)
    def buyer_returns_goods(self, n: int, r: int) -> None:
        self.refund_rule("return", self.buyer, n, r, "return", "return", carrier="EMS", tracking_number="E1",
                         states=(RETURN,))

    @precondition(lambda self: any(t.refunds for t in self.trades))
    @rule(n=trade_pick, r=refund_pick)
    def seller_receives_return(self, n: int, r: int) -> None:
        self.refund_rule("receive", self.seller, n, r, "receive", "receive-return", done_by_silence=RECEIVE,
                         password=True, states=(RECEIVE,))

    # --- rules: disputes, ratings --------------------------------------------------------------------------------

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick, by_seller=st.booleans())
    def open_dispute(self, n: int, by_seller: bool) -> None:
        refused = [t for t in self.trades if (r := t.open_refund()) and r.status == REFUSED]
        self.dispute_trade(refused[n % len(refused)] if refused and n < 6 else self.pick(n), by_seller)

    def dispute_trade(self, t: TradeModel, by_seller: bool) -> None:
        def predict(m: TradeModel, applied: set[Any]) -> RefundModel:
            if by_seller:  # the refusal was the seller's own answer: escalating it is the buyer's choice
                raise Refused("buyer_only")
            refund = m.open_refund()
            if refund is None or refund.status != REFUSED or refund.disputed:
                raise Refused("no_refused_refund")
            refund.disputed, refund.deadline = True, None
            return refund

        who = self.seller if by_seller else self.buyer
        refund, response = self.step("dispute", t, predict,
                                     lambda: self.post(who, f"trades/{t.id}/disputes", reason="not as described"))
        if refund is not None:
            refund.dispute_id = response.json["id"]

    @precondition(lambda self: any(r.dispute_id for t in self.trades for r in t.refunds))
    @rule(n=trade_pick, outcome=st.sampled_from(["release", "refund", "split"]), kind=amount_kinds,
          x=st.integers(1, 1_000_000))
    def staff_decide(self, n: int, outcome: str, kind: str, x: int) -> None:
        disputed = [t for t in self.trades if any(r.dispute_id for r in t.refunds)]
        undecided = [t for t in disputed if t.status not in (FINISHED, CLOSED)]
        pool = undecided if undecided and n < 6 else disputed
        self.decide_trade(pool[n % len(pool)], outcome, kind, x)

    def decide_trade(self, t: TradeModel, outcome: str, kind: str, x: int) -> None:
        dispute_id = next(r.dispute_id for r in reversed(t.refunds) if r.dispute_id)
        now = self.clock.now()
        held = t.held  # nothing once decided: the amount is then only ever refused
        amount = max({"held": held, "part": 1 + x % max(held, 1), "one": 1, "over": held + 1 + x % 1000}[kind], 1)

        def predict(m: TradeModel, applied: set[Any]) -> None:
            refund = next(r for r in m.refunds if r.dispute_id == dispute_id)
            if refund.status not in OPEN_REFUND:
                raise Refused("dispute_decided")
            to_buyer = {"release": 0, "refund": m.held, "split": amount}[outcome]
            if outcome == "split" and not 0 < amount < m.held:
                raise Refused("invalid_split")
            m.refunded += to_buyer
            release(m, m.held)
            refund.status, refund.deadline = (SUCCESS if to_buyer else RCLOSED), None
            m.status, m.paused_at = (FINISHED if m.released else CLOSED), None
            if m.status == FINISHED:
                m.finished_at = now
            else:
                m.close_reason = "refunded"

        # Staff decide without catching the trade up: a disputed refund stops every clock the trade has.
        body = {"outcome": outcome, "reason": "photos"}
        if outcome == "split" or kind == "one":
            body["refund_amount"] = amount
        self.step("decide " + outcome, t, lambda m, _: predict(m, set()), lambda: self.post(
            self.staff, f"admin/disputes/{dispute_id}/decide", **body))

    @precondition(lambda self: self.trades)
    @rule(n=trade_pick, by_seller=st.booleans(), score=st.sampled_from([-1, 0, 1]))
    def rate(self, n: int, by_seller: bool, score: int) -> None:
        finished = [t for t in self.trades if t.status == FINISHED]
        self.rate_trade(finished[n % len(finished)] if finished and n < 5 else self.pick(n), by_seller, score)

    def rate_trade(self, t: TradeModel, by_seller: bool, score: int) -> None:
        now = self.clock.now()
        role = "seller" if by_seller else "buyer"

        def predict(m: TradeModel, applied: set[Any]) -> None:
            if m.status != FINISHED or m.finished_at is None or now > m.finished_at + 15 * DAY:
                raise Refused("rating_closed")
            if role in m.rated:
                raise Refused("already_rated")
            m.rated.add(role)

        who = self.seller if by_seller else self.buyer
        self.step("rate", t, predict, lambda: self.post(who, f"trades/{t.id}/ratings", score=score))

    # --- rules: time -------------------------------------------------------------------------------------------

    @rule(delta=durations, sweep=st.booleans())
    def time_passes(self, delta: timedelta, sweep: bool) -> None:
        self.clock.advance(delta)
        self.outcomes["time passes"] += 1
        if sweep:
            self.sweep_until_quiet()

    def sweep_until_quiet(self) -> None:
        now = self.clock.now()
        for _ in range(8):
            done = run_sweeper(self.app)
            if not any(done.values()):
                break
            self.outcomes["sweeps"] += 1
        else:
            raise AssertionError(f"the sweeper still finds work after 8 passes: {done}")
        for i, t in enumerate(self.trades):
            model = copy.deepcopy(t)
            while done := sweep_pass(model, now):
                for what in done:
                    self.outcomes[f"deadline: {what}"] += 1
            if model.status in (FINISHED, CLOSED) and model.final_money is None:
                model.final_money = model.money()
            self.trades[i] = model

    # --- after every step --------------------------------------------------------------------------------------

    @invariant()
    def the_app_agrees_with_the_model(self) -> None:
        paid = refunded = released = fees = 0
        for t in self.trades:
            body = self.get(self.buyer, f"trades/{t.id}")
            seen = {
                "status": body["status"], "paid": body["paid_amount"], "refunded": body["refunded_amount"],
                "released": body["released_amount"], "fee": body["fee_amount"], "extended": body["extended"],
                "confirm_by": at(body["deadlines"]["confirm_by"]), "remind_at": at(body["deadlines"]["remind_at"]),
                "paused": body["deadlines"]["paused"], "finished_at": at(body["finished_at"]),
                "close_reason": body["close_reason"],
                "refunds": [(r["id"], r["status"], r["amount"], at(r["deadline"]), r["disputed"])
                            for r in body["refunds"]],
            }
            in_confirm = t.status == CONFIRM
            expected = {
                "status": t.status, "paid": t.paid, "refunded": t.refunded, "released": t.released, "fee": t.fee,
                "extended": t.extended, "confirm_by": t.confirm_deadline if in_confirm else None,
                "remind_at": t.remind_at if in_confirm else None, "paused": t.paused_at is not None,
                "finished_at": t.finished_at, "close_reason": t.close_reason,
                "refunds": [(r.id, r.status, r.amount, r.deadline, r.disputed) for r in t.refunds],
            }
            assert seen == expected, f"trade {t.id} at {self.clock.now()}:\n app   {seen}\n model {expected}"
            assert sum(r["refunded_amount"] for r in body["refunds"]) == body["refunded_amount"], body
            assert 0 <= t.refunded <= t.paid and t.held >= 0
            assert escrow_balance(self.app, t.id) == t.held, t
            if t.final_money is not None:
                assert t.money() == t.final_money, t
            if t.status in (FINISHED, CLOSED):
                assert t.held == 0, t
            paid, refunded, released, fees = paid + t.paid, refunded + t.refunded, released + t.released, fees + t.fee
        for t in self.trades:
            bundle = self.get(self.buyer, f"trades/{t.id}/evidence-bundle")
            assert bundle["intact"], (t.id, bundle["broken_at"])
            reminders = [e for e in bundle["timeline"] if e["data"].get("event") == "confirm_deadline_reminder"]
            assert len(reminders) == t.reminders, (t, bundle["timeline"])
        result = self.app.test_cli_runner().invoke(args=["wallet", "check"])
        assert result.exit_code == 0 and "ledger clean" in result.output, result.output
        # Money is conserved: what left the buyer is in escrow, back with the buyer, with the seller or the fees.
        assert self.api.balance(self.fresh(self.buyer)) == self.start["buyer"] - paid + refunded
        assert self.api.balance(self.fresh(self.seller)) == self.start["seller"] + released - fees
        assert self.fees_balance() == self.start["fees"] + fees

    def teardown(self) -> None:
        # Leave nothing due for the next run's sweeper: long enough for every deadline to pass.
        self.clock.advance(days=60)
        self.sweep_until_quiet()
        self.logged_in.clear()


def at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_random_escrow_trades_keep_their_promises(app: Flask, clock: FrozenClock, api: Any, people: Any) -> None:
    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], str(FEE_BP)]).exit_code == 0
    cast = {"buyer": buyer, "seller": seller, "staff": grant_staff(api, app)}
    EscrowMachine.outcomes.clear()
    run_state_machine_as_test(
        lambda: EscrowMachine(app, clock, api, cast),
        # Derandomized: the same runs every time, so the coverage assertion below cannot flake.
        settings=settings(max_examples=EXPLORE or 50, stateful_step_count=30, deadline=None, database=None,
                          derandomize=not EXPLORE),
    )
    print(dict(EscrowMachine.outcomes))
    if EXPLORE:
        return
    exercised = {outcome for outcome, times in EscrowMachine.outcomes.items() if times}
    assert exercised >= {
        "open: ok", "pay: ok", "cancel: ok", "ship: ok", "confirm: ok", "extend: ok", "request_refund: ok",
        "agree: ok", "refuse: ok", "withdraw: ok", "dispute: ok", "rate: ok",
        "decide release: ok", "decide refund: ok", "time passes",
        "pay: trade_not_payable", "request_refund: refund_exceeds_held", "request_refund: refund_in_progress",
        "extend: already_extended", "rate: already_rated", "withdraw: dispute_open",
        "deadline: expire", "deadline: auto_confirm", "deadline: WAIT_SELLER_AGREE", "deadline: reminder",
    }, sorted(exercised)
    # Reached by exploration (ESCROW_MACHINE_EXAMPLES=200) but not reliably by these 50 runs, so not insisted on:
    # "return: ok", "receive: ok", "decide split: ok".
