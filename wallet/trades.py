"""Escrow trade use cases: the state machine of ``wallet.escrow`` applied to rows, money and messages.

Every use case locks the trade row first (``SELECT ... FOR UPDATE``), checks the transition with the pure
rules, moves money through the ledger, appends to the hash-chained timeline and enqueues its SMS, all in one
transaction. Two actors racing on one trade (the buyer confirming while the sweeper auto-confirms, a refund
request against a confirmation) queue on that lock: the first wins, the second finds the new state and is
refused with a stable code (or, for the sweeper, skips).

A stranger to a trade gets ``NotFound`` for everything, never "forbidden": trades do not leak.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from flask import current_app
from sqlalchemy import bindparam, event, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import clock
from core.db import db, is_postgres, run_in_transaction
from core.errors import AppError, NotFound
from core.ids import new_id
from core.pagination import page_limit
from notifications.outbox import enqueue
from notifications.templates import format_amount, format_time, mask_phone, short_ref
from security.models import User
from wallet import escrow, ledger, limits, timeline
from wallet.cards import verified_seller
from wallet.escrow import (
    OPEN_REFUND_STATES,
    REFUND_SUCCESS,
    TRADE_CLOSED,
    TRADE_FINISHED,
    WAIT_BUYER_CONFIRM_GOODS,
    WAIT_BUYER_PAY,
    WAIT_SELLER_AGREE,
    WAIT_SELLER_SEND_GOODS,
    IllegalTransition,
)
from wallet.escrow_models import Dispute, Rating, Refund, SellerSettings, Trade
from wallet.models import FEES

T = TypeVar("T")
SYSTEM = "system"
_UNPROCESSABLE = {"invalid_refund_amount", "refund_exceeds_held", "invalid_split", "invalid_outcome"}


class TradeConflict(AppError):
    """The action is not allowed in the trade's (or its refund's) current state; ``code`` says which rule."""

    status, title = 409, "Not allowed in this state"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        if code in _UNPROCESSABLE:
            self.status = 422


class SellerNotVerified(AppError):
    """Only sellers with a verified identity and a bound card can receive escrow payments (R7)."""

    status, code, title = 422, "seller_not_verified", "Seller not verified"


class SellerNotFound(AppError):
    """No account has the seller phone number (or it is the buyer's own)."""

    status, code, title = 404, "seller_not_found", "Seller not found"


class AlreadyRated(AppError):
    """This party already rated this trade."""

    status, code, title = 409, "already_rated", "Already rated"


class RatingClosed(AppError):
    """Ratings are accepted only within the rating window after a finished trade."""

    status, code, title = 409, "rating_closed", "Rating not possible"


def _policy() -> escrow.Policy:
    """The deadlines of DESIGN 6, from configuration (``ESCROW_*``)."""
    cfg = current_app.config
    return escrow.Policy(
        pay_within=timedelta(hours=cfg["ESCROW_PAY_HOURS"]),
        confirm_within=timedelta(days=cfg["ESCROW_CONFIRM_DAYS"]),
        remind_before=timedelta(days=cfg["ESCROW_REMIND_DAYS_BEFORE"]),
        extend_by=timedelta(days=cfg["ESCROW_EXTEND_DAYS"]),
        seller_respond_before_shipping=timedelta(days=cfg["ESCROW_REFUND_RESPOND_DAYS_BEFORE_SHIPPING"]),
        seller_respond_after_shipping=timedelta(days=cfg["ESCROW_REFUND_RESPOND_DAYS_AFTER_SHIPPING"]),
        buyer_return_within=timedelta(days=cfg["ESCROW_RETURN_SHIP_DAYS"]),
        seller_receive_within=timedelta(days=cfg["ESCROW_RETURN_RECEIVE_DAYS"]),
        buyer_escalate_within=timedelta(days=cfg["ESCROW_ESCALATE_DAYS"]),
        rate_within=timedelta(days=cfg["ESCROW_RATE_DAYS"]),
    )


def _rules(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except IllegalTransition as exc:
        raise TradeConflict(exc.code, str(exc)) from exc


# Statements every trade runs, built once (building and keying a statement costs more than running it).
_users = User.__table__
_buyer, _seller = _users.alias("buyer"), _users.alias("seller")
# The trade, locked, with what its messages need of its two parties (phone, locale): one statement.
_LOCK_TRADE = (
    select(Trade, _buyer.c.phone.label("buyer_phone"), _buyer.c.locale.label("buyer_locale"),
           _seller.c.phone.label("seller_phone"), _seller.c.locale.label("seller_locale"))
    .join(_buyer, _buyer.c.id == Trade.buyer_id)
    .join(_seller, _seller.c.id == Trade.seller_id)
    .where(Trade.id == bindparam("trade_id"))
    .with_for_update(of=Trade)
    .execution_options(populate_existing=True)
)
_OPEN_REFUND = select(Refund).where(Refund.trade_id == bindparam("trade_id"), Refund.status.in_(OPEN_REFUND_STATES))
_CONTACTS = select(_users.c.id, _users.c.phone, _users.c.locale).where(
    _users.c.id.in_(bindparam("user_ids", expanding=True)))
_KNOWN_CONTACTS = "trade_party_contacts"


class Contact(NamedTuple):
    """Where a party's messages go: ``id``, ``phone`` and ``locale`` of a user."""

    id: str
    phone: str
    locale: str


def _lock(trade_id: str) -> Trade | None:
    """The trade, locked for this transaction; its parties' contacts are kept for ``_contacts`` until the
    transaction ends."""
    row = db.session.execute(_LOCK_TRADE, {"trade_id": trade_id}).first()
    if row is None:
        return None
    trade = row.Trade
    known = db.session.info.setdefault(_KNOWN_CONTACTS, {})
    known[trade.buyer_id] = Contact(trade.buyer_id, row.buyer_phone, row.buyer_locale)
    known[trade.seller_id] = Contact(trade.seller_id, row.seller_phone, row.seller_locale)
    return trade


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_contacts(session: Session) -> None:
    session.info.pop(_KNOWN_CONTACTS, None)


def _party_trade(user_id: str, trade_id: str) -> Trade:
    trade = _lock(trade_id)
    if trade is None or user_id not in (trade.buyer_id, trade.seller_id):
        raise NotFound("No such trade.")
    return trade


def _as_buyer(user_id: str, trade_id: str) -> Trade:
    trade = _party_trade(user_id, trade_id)
    if trade.buyer_id != user_id:
        raise TradeConflict("buyer_only", "Only the buyer can do this.")
    return trade


def _as_seller(user_id: str, trade_id: str) -> Trade:
    trade = _party_trade(user_id, trade_id)
    if trade.seller_id != user_id:
        raise TradeConflict("seller_only", "Only the seller can do this.")
    return trade


def _contacts(*user_ids: str) -> dict[str, Contact]:
    """The contacts of these users, by id: those of a trade locked in this transaction are known already; the
    others come in one query for all the messages of a use case."""
    known = db.session.info.get(_KNOWN_CONTACTS, {})
    missing = [user_id for user_id in user_ids if user_id not in known]
    found = {row.id: Contact(*row) for row in db.session.execute(_CONTACTS, {"user_ids": missing})} if missing else {}
    return {user_id: known.get(user_id) or found[user_id] for user_id in user_ids}


def _contact(user_id: str) -> Contact:
    return _contacts(user_id)[user_id]


def _tell(to: Contact, event: str, trade: Trade, **params: Any) -> None:
    enqueue(to.phone, event, locale=to.locale, user_id=to.id, trade=short_ref(trade.id), **params)


def _open_refund(trade: Trade) -> Refund | None:
    return db.session.scalars(_OPEN_REFUND, {"trade_id": trade.id}).first()


def _move(trade: Trade, action: str, actor: str, **data: Any) -> None:
    try:
        # An open refund can only forbid a move, so a move allowed even with one needs no look at the refunds.
        target = escrow.trade_move(trade.status, action, refund_open=True)
    except IllegalTransition as exc:
        if exc.code != "refund_in_progress":
            raise TradeConflict(exc.code, str(exc)) from exc
        target = _rules(lambda: escrow.trade_move(trade.status, action, refund_open=_open_refund(trade) is not None))
    timeline.append(trade, actor, "state", action=action, before=trade.status, after=target, **data)
    trade.status = target


# --- money ------------------------------------------------------------------------------------------------


def _held(trade: Trade) -> int:
    return trade.paid_amount - trade.refunded_amount - trade.released_amount


def _release_to_seller(trade: Trade, amount: int, actor: str) -> int:
    """Pay ``amount`` of the escrow to the seller, less the seller's fee; returns what the seller got."""
    assert trade.escrow_account_id is not None
    fee = escrow.seller_fee(amount, trade.fee_bp)
    seller_wallet = ledger.open_wallet(trade.seller_id, trade.currency)
    if amount - fee > 0:
        moved = ledger.transfer(trade.escrow_account_id, seller_wallet, amount - fee, kind=ledger.ESCROW_RELEASE,
                                currency=trade.currency, reference=trade.id)
        timeline.append(trade, actor, "money", movement="release", amount=amount - fee, transfer=moved.id)
    if fee:
        fees = ledger.system_account(FEES, "platform", trade.currency)
        moved = ledger.transfer(trade.escrow_account_id, fees, fee, kind=ledger.FEE, currency=trade.currency,
                                reference=trade.id)
        timeline.append(trade, actor, "money", movement="fee", amount=fee, transfer=moved.id)
    trade.released_amount += amount
    trade.fee_amount += fee
    return amount - fee


def _refund_to_buyer(trade: Trade, amount: int, actor: str) -> None:
    assert trade.escrow_account_id is not None
    moved = ledger.transfer(trade.escrow_account_id, ledger.open_wallet(trade.buyer_id, trade.currency), amount,
                            kind=ledger.REFUND, currency=trade.currency, reference=trade.id)
    trade.refunded_amount += amount
    timeline.append(trade, actor, "money", movement="refund", amount=amount, transfer=moved.id)


def _finish(trade: Trade, action: str, actor: str) -> None:
    now = clock.now()
    contacts = _contacts(trade.seller_id, trade.buyer_id)
    _move(trade, action, actor)
    net = _release_to_seller(trade, _held(trade), actor)
    trade.finished_at = now
    for party in (trade.seller_id, trade.buyer_id):
        _tell(contacts[party], "trade_finished", trade, amount=format_amount(net))


def _pause(trade: Trade, now: datetime) -> None:
    if trade.status == WAIT_BUYER_CONFIRM_GOODS and trade.paused_at is None:
        trade.paused_at = now


def _resume(trade: Trade, now: datetime) -> None:
    if trade.paused_at is None:
        return
    assert trade.confirm_deadline is not None and trade.remind_at is not None
    trade.confirm_deadline = escrow.resumed_deadline(trade.confirm_deadline, trade.paused_at, now)
    trade.remind_at = escrow.resumed_deadline(trade.remind_at, trade.paused_at, now)
    trade.paused_at = None


# --- opening, paying, shipping, confirming ----------------------------------------------------------------


def open_trade(buyer_id: str, seller_phone: str, title: str, amount: int, shipping_fee: int,
               currency: str) -> Trade:
    """A new trade in ``WAIT_BUYER_PAY``. Raises ``SellerNotFound``, ``SellerNotVerified``, ``LimitExceeded``."""
    limits.check_single(amount + shipping_fee)

    def work() -> Trade:
        seller = db.session.execute(
            select(User.id, SellerSettings.fee_bp, verified_seller(User.id).label("verified"))
            .outerjoin(SellerSettings, SellerSettings.user_id == User.id)
            .where(User.phone == seller_phone)
        ).first()
        if seller is None or seller.id == buyer_id:
            raise SellerNotFound("No seller account has this phone number.")
        if not seller.verified:
            raise SellerNotVerified("This seller has not verified identity and a bank card yet.")
        now = clock.now()
        trade = Trade(id=new_id("trd"), buyer_id=buyer_id, seller_id=seller.id, title=title, amount=amount,
                      shipping_fee=shipping_fee, currency=currency, status=WAIT_BUYER_PAY,
                      fee_bp=seller.fee_bp or 0, created_at=now,
                      pay_deadline=now + _policy().pay_within, timeline_seq=0, timeline_hash=timeline.GENESIS,
                      paid_amount=0, refunded_amount=0, released_amount=0, fee_amount=0)
        first = timeline.next_entry(trade, buyer_id, "state", action="open", after=WAIT_BUYER_PAY, title=title,
                                    amount=amount, shipping_fee=shipping_fee)
        db.session.add(trade)
        db.session.flush()  # the trade row before its first timeline entry (no ORM relationship orders them)
        db.session.add(first)
        return trade

    return run_in_transaction(work)


def pay(buyer_id: str, trade_id: str) -> Trade:
    """Buyer's wallet → the trade's own escrow account (caller's transaction, under an idempotency key).
    Raises ``TradeConflict``, ``InsufficientFunds``, ``LimitExceeded``."""
    trade = _as_buyer(buyer_id, trade_id)
    contacts = _contacts(trade.buyer_id, trade.seller_id)
    total = trade.amount + trade.shipping_fee
    _move(trade, "pay", buyer_id)
    limits.consume_daily(buyer_id, total)
    trade.escrow_account_id = ledger.escrow_account(trade.id, trade.currency)
    moved = ledger.transfer(ledger.open_wallet(buyer_id, trade.currency), trade.escrow_account_id, total,
                            kind=ledger.ESCROW_PAY, currency=trade.currency, reference=trade.id)
    timeline.append(trade, buyer_id, "money", movement="pay", amount=total, transfer=moved.id)
    now = clock.now()
    trade.paid_amount, trade.paid_at = total, now
    buyer, seller = contacts[trade.buyer_id], contacts[trade.seller_id]
    _tell(seller, "trade_paid_ship_now", trade, amount=format_amount(total))
    enqueue(buyer.phone, "balance_payment", locale=buyer.locale, user_id=buyer_id, amount=format_amount(total),
            payee=mask_phone(seller.phone), time=format_time(now))
    return trade


def ship(seller_id: str, trade_id: str, carrier: str, tracking_number: str) -> Trade:
    def work() -> Trade:
        trade = _as_seller(seller_id, trade_id)
        buyer = _contact(trade.buyer_id)
        _move(trade, "ship", seller_id, carrier=carrier, tracking_number=tracking_number)
        now, policy = clock.now(), _policy()
        trade.carrier, trade.tracking_number, trade.shipped_at = carrier, tracking_number, now
        trade.confirm_deadline = escrow.confirm_deadline(now, policy)
        trade.remind_at = trade.confirm_deadline - policy.remind_before
        _tell(buyer, "trade_shipped", trade, deadline=format_time(trade.confirm_deadline))
        return trade

    return run_in_transaction(work)


def confirm(buyer_id: str, trade_id: str) -> Trade:
    """Buyer confirms receipt: escrow → seller (less fee). Caller's transaction, under an idempotency key."""
    trade = _as_buyer(buyer_id, trade_id)
    _finish(trade, "confirm", buyer_id)
    return trade


def extend(buyer_id: str, trade_id: str) -> Trade:
    def work() -> Trade:
        trade = _as_buyer(buyer_id, trade_id)
        _move(trade, "extend", buyer_id)
        assert trade.confirm_deadline is not None
        policy = _policy()
        trade.confirm_deadline = _rules(lambda: escrow.extended_deadline(trade.confirm_deadline, trade.extended,
                                                                          policy))
        trade.remind_at, trade.reminded, trade.extended = trade.confirm_deadline - policy.remind_before, False, True
        return trade

    return run_in_transaction(work)


def cancel(user_id: str, trade_id: str) -> Trade:
    def work() -> Trade:
        trade = _party_trade(user_id, trade_id)
        _move(trade, "cancel", user_id)
        trade.closed_at, trade.close_reason = clock.now(), "cancelled"
        return trade

    return run_in_transaction(work)


# --- refunds and disputes ---------------------------------------------------------------------------------


def _refund(trade: Trade, refund_id: str) -> Refund:
    refund = db.session.get(Refund, refund_id)
    if refund is None or refund.trade_id != trade.id:
        raise NotFound("No such refund on this trade.")
    return refund


def request_refund(buyer_id: str, trade_id: str, amount: int, reason: str, return_goods: bool) -> Refund:
    def work() -> Refund:
        trade = _as_buyer(buyer_id, trade_id)
        if trade.status not in (WAIT_SELLER_SEND_GOODS, WAIT_BUYER_CONFIRM_GOODS):
            raise TradeConflict("trade_not_refundable", f"cannot ask for a refund in state {trade.status}")
        if _open_refund(trade) is not None:
            raise TradeConflict("refund_in_progress", "a refund is already open on this trade")
        shipped = trade.status == WAIT_BUYER_CONFIRM_GOODS
        if return_goods and not shipped:
            raise TradeConflict("nothing_to_return", "nothing was shipped yet, so nothing can be returned")
        _rules(lambda: escrow.check_refund_amount(amount, trade.paid_amount, trade.refunded_amount
                                                  + trade.released_amount))
        now = clock.now()
        refund = Refund(id=new_id("rfd"), trade_id=trade.id, amount=amount, reason=reason, return_goods=return_goods,
                        after_shipping=shipped, status=WAIT_SELLER_AGREE, created_at=now,
                        deadline=escrow.refund_deadline(WAIT_SELLER_AGREE, now, shipped, _policy()))
        db.session.add(refund)
        db.session.flush()
        _pause(trade, now)
        timeline.append(trade, buyer_id, "refund", action="request", refund=refund.id, amount=amount, reason=reason,
                        return_goods=return_goods)
        assert refund.deadline is not None
        _tell(_contact(trade.seller_id), "refund_requested", trade, amount=format_amount(amount),
              deadline=format_time(refund.deadline))
        db.session.flush()
        return refund

    return run_in_transaction(work)


def _refund_step(trade: Trade, refund: Refund, action: str, actor: str, **data: Any) -> None:
    """Apply ``action`` to ``refund`` and everything that follows from its new state."""
    target = _rules(lambda: escrow.refund_move(refund.status, action, return_goods=refund.return_goods))
    now = clock.now()
    timeline.append(trade, actor, "refund", action=action, refund=refund.id, before=refund.status, after=target,
                    **data)
    refund.status = target
    refund.deadline = escrow.refund_deadline(target, now, refund.after_shipping, _policy())
    if target == escrow.WAIT_BUYER_RETURN_GOODS:  # agreed (or silent), goods to come back first
        _tell(_contact(trade.buyer_id), "refund_agreed", trade, amount=format_amount(refund.amount))
    if target == REFUND_SUCCESS:
        _pay_refund(trade, refund, actor, now)
    elif target == escrow.REFUND_CLOSED:
        refund.resolved_at = now
        _resume(trade, now)


def _pay_refund(trade: Trade, refund: Refund, actor: str, now: datetime) -> None:
    _refund_to_buyer(trade, refund.amount, actor)
    refund.resolved_at, refund.deadline = now, None
    _tell(_contact(trade.buyer_id), "refund_completed", trade, amount=format_amount(refund.amount))
    if _held(trade) == 0 and trade.released_amount == 0:
        _move(trade, "refund_all", actor)
        trade.closed_at, trade.close_reason = now, "refunded"
        trade.paused_at = None
    else:
        _resume(trade, now)


def agree_refund(seller_id: str, trade_id: str, refund_id: str) -> Refund:
    def work() -> Refund:
        trade = _as_seller(seller_id, trade_id)
        refund = _refund(trade, refund_id)
        _refund_step(trade, refund, "agree", seller_id)
        return refund

    return run_in_transaction(work)


def refuse_refund(seller_id: str, trade_id: str, refund_id: str, reason: str) -> Refund:
    def work() -> Refund:
        trade = _as_seller(seller_id, trade_id)
        refund = _refund(trade, refund_id)
        _refund_step(trade, refund, "refuse", seller_id, reason=reason)
        refund.refuse_reason = reason
        _tell(_contact(trade.buyer_id), "refund_refused", trade)
        return refund

    return run_in_transaction(work)


def return_goods(buyer_id: str, trade_id: str, refund_id: str, carrier: str, tracking_number: str) -> Refund:
    def work() -> Refund:
        trade = _as_buyer(buyer_id, trade_id)
        refund = _refund(trade, refund_id)
        _refund_step(trade, refund, "return", buyer_id, carrier=carrier, tracking_number=tracking_number)
        refund.return_carrier, refund.return_tracking_number = carrier, tracking_number
        return refund

    return run_in_transaction(work)


def receive_return(seller_id: str, trade_id: str, refund_id: str) -> Refund:
    def work() -> Refund:
        trade = _as_seller(seller_id, trade_id)
        refund = _refund(trade, refund_id)
        _refund_step(trade, refund, "receive", seller_id)
        return refund

    return run_in_transaction(work)


def open_dispute(user_id: str, trade_id: str, reason: str) -> Dispute:
    """Escalate a refused refund to the platform. Raises ``TradeConflict`` (code ``no_refused_refund``)."""

    def work() -> Dispute:
        trade = _party_trade(user_id, trade_id)
        refund = _open_refund(trade)
        if refund is None or refund.status != escrow.SELLER_REFUSE_BUYER or refund.disputed:
            raise TradeConflict("no_refused_refund", "only a refused refund can be taken to the platform")
        now = clock.now()
        refund.disputed, refund.deadline = True, None  # the platform decides now, not the clock
        dispute = Dispute(id=new_id("dsp"), trade_id=trade.id, refund_id=refund.id, opened_by=user_id, reason=reason,
                          status="open", created_at=now)
        db.session.add(dispute)
        db.session.flush()
        timeline.append(trade, user_id, "dispute", action="open", dispute=dispute.id, reason=reason)
        contacts = _contacts(trade.buyer_id, trade.seller_id)
        for party in (trade.buyer_id, trade.seller_id):
            _tell(contacts[party], "dispute_opened", trade)
        db.session.flush()
        return dispute

    try:
        return run_in_transaction(work)
    except IntegrityError as exc:
        raise TradeConflict("dispute_open", "this trade already has an open dispute") from exc


def list_disputes(status: str | None) -> list[Dispute]:
    stmt = select(Dispute).order_by(Dispute.id.desc()).limit(200)
    if status:
        stmt = stmt.where(Dispute.status == status)
    return run_in_transaction(lambda: list(db.session.scalars(stmt)))


def decide_dispute(staff_id: str, dispute_id: str, outcome: str, refund_amount: int | None, reason: str) -> Dispute:
    """Staff decide: release everything held to the seller, refund it to the buyer, or split it."""

    def work() -> Dispute:
        dispute = db.session.get(Dispute, dispute_id)
        if dispute is None:
            raise NotFound("No such dispute.")
        trade = _lock(dispute.trade_id)
        assert trade is not None
        if dispute.status != "open":
            raise TradeConflict("dispute_decided", "this dispute was already decided")
        refund = db.session.get(Refund, dispute.refund_id)
        assert refund is not None
        now, held = clock.now(), _held(trade)
        to_buyer, to_seller = _rules(lambda: escrow.split_amounts(held, refund_amount, outcome))
        timeline.append(trade, staff_id, "dispute", action="decide", dispute=dispute.id, outcome=outcome,
                        to_buyer=to_buyer, to_seller=to_seller, reason=reason)
        if to_buyer:
            _refund_to_buyer(trade, to_buyer, staff_id)
        if to_seller:
            _release_to_seller(trade, to_seller, staff_id)
        refund.status, refund.resolved_at, refund.deadline = (REFUND_SUCCESS if to_buyer else escrow.REFUND_CLOSED,
                                                              now, None)
        if to_seller:
            trade.status, trade.finished_at = TRADE_FINISHED, now
        else:
            trade.status, trade.closed_at, trade.close_reason = TRADE_CLOSED, now, "refunded"
        trade.paused_at = None
        dispute.status, dispute.outcome, dispute.refund_amount = "decided", outcome, to_buyer
        dispute.decision_reason, dispute.decided_by, dispute.decided_at = reason, staff_id, now
        contacts = _contacts(trade.buyer_id, trade.seller_id)
        for party in (trade.buyer_id, trade.seller_id):
            _tell(contacts[party], "dispute_decided", trade, outcome=outcome, amount=format_amount(to_buyer))
        return dispute

    return run_in_transaction(work)


# --- evidence, ratings ------------------------------------------------------------------------------------


def add_evidence(user_id: str, trade_id: str, text: str | None, attachments: list[dict[str, str]]) -> int:
    """Add a party's evidence to the timeline; returns its sequence number."""

    def work() -> int:
        trade = _party_trade(user_id, trade_id)
        entry = timeline.append(trade, user_id, "evidence", text=text, attachments=attachments)
        return entry.seq

    return run_in_transaction(work)


def rate(user_id: str, trade_id: str, score: int, comment: str | None) -> Rating:
    def work() -> Rating:
        trade = _party_trade(user_id, trade_id)
        now = clock.now()
        if (trade.status != TRADE_FINISHED or trade.finished_at is None
                or now > trade.finished_at + _policy().rate_within):
            raise RatingClosed("Only a finished trade can be rated, within the rating window.")
        rater_is_buyer = user_id == trade.buyer_id
        rating = Rating(id=new_id("rat"), trade_id=trade.id, rater_id=user_id,
                        ratee_id=trade.seller_id if rater_is_buyer else trade.buyer_id,
                        role="seller" if rater_is_buyer else "buyer", score=score, comment=comment, created_at=now)
        db.session.add(rating)
        db.session.flush()
        timeline.append(trade, user_id, "rating", score=score, comment=comment)
        return rating

    try:
        return run_in_transaction(work)
    except IntegrityError as exc:
        raise AlreadyRated("You already rated this trade.") from exc


@dataclass(frozen=True)
class Reputation:
    score: int
    positive_rate: float | None
    count: int


def reputation(user_id: str, role: str) -> Reputation:
    """Credit score (sum of scores), share of positive ratings and count, for ``user_id`` as ``role``."""

    def work() -> Reputation:
        row = db.session.execute(
            select(func.coalesce(func.sum(Rating.score), 0), func.count(Rating.id),
                   func.coalesce(func.sum(func.abs(Rating.score) + Rating.score), 0))
            .where(Rating.ratee_id == user_id, Rating.role == role)
        ).one()
        score, count, twice_positive = int(row[0]), int(row[1]), int(row[2])
        return Reputation(score, round(twice_positive / 2 / count, 4) if count else None, count)

    return run_in_transaction(work)


# --- reads ------------------------------------------------------------------------------------------------


def _visible(trade: Trade | None, user_id: str, staff: bool) -> Trade:
    """The trade if its viewer may see it (a party, or staff); ``NotFound`` for a stranger, never 403."""
    if trade is None or (not staff and user_id not in (trade.buyer_id, trade.seller_id)):
        raise NotFound("No such trade.")
    return trade


def get_trade(user_id: str, trade_id: str, *, staff: bool = False) -> Trade:
    return _visible(run_in_transaction(lambda: db.session.get(Trade, trade_id), read_only=True), user_id, staff)


# A trade joined to each of its refunds (most trades have none or one), oldest refund first.
_TRADE_WITH_REFUNDS = (select(Trade, Refund).outerjoin(Refund, Refund.trade_id == Trade.id)
                       .where(Trade.id == bindparam("trade_id")).order_by(Refund.id))


def get_trade_with_refunds(user_id: str, trade_id: str, *, staff: bool = False) -> tuple[Trade, list[Refund]]:
    """A trade its viewer may see and its refunds, in one statement. Raises ``NotFound`` as ``get_trade``."""
    rows = run_in_transaction(lambda: db.session.execute(_TRADE_WITH_REFUNDS, {"trade_id": trade_id}).all(),
                              read_only=True)
    trade = _visible(rows[0][0] if rows else None, user_id, staff)
    return trade, [refund for _trade, refund in rows if refund is not None]


def refunds_of(trade_id: str) -> list[Refund]:
    return run_in_transaction(lambda: list(db.session.scalars(
        select(Refund).where(Refund.trade_id == trade_id).order_by(Refund.id))), read_only=True)


def list_trades(user_id: str, role: str | None, limit: int, starting_after: str | None) -> tuple[list[Trade], bool]:
    if role == "buyer":
        stmt = select(Trade).where(Trade.buyer_id == user_id)
    elif role == "seller":
        stmt = select(Trade).where(Trade.seller_id == user_id)
    else:
        stmt = select(Trade).where(or_(Trade.buyer_id == user_id, Trade.seller_id == user_id))
    if starting_after:
        stmt = stmt.where(Trade.id < starting_after)
    page = stmt.order_by(Trade.id.desc()).limit(page_limit(limit + 1))
    rows = run_in_transaction(lambda: list(db.session.scalars(page)), read_only=True)
    return rows[:limit], len(rows) > limit


# --- the sweeper ------------------------------------------------------------------------------------------


def _due(stmt: Any) -> list[str]:
    return run_in_transaction(lambda: list(db.session.scalars(stmt.limit(200))))


def _sweep_one(trade_id: str, apply: Callable[[Trade, datetime], bool]) -> bool:
    """Lock one trade (skipping it if someone else holds it) and apply a deadline if it is still due."""

    def work() -> bool:
        stmt = select(Trade).where(Trade.id == trade_id).execution_options(populate_existing=True)
        stmt = stmt.with_for_update(skip_locked=True) if is_postgres() else stmt
        trade = db.session.scalars(stmt).first()
        return trade is not None and apply(trade, clock.now())

    return run_in_transaction(work)


def _expire_unpaid(trade: Trade, now: datetime) -> bool:
    if trade.status != WAIT_BUYER_PAY or trade.pay_deadline is None or trade.pay_deadline > now:
        return False
    _move(trade, "expire", SYSTEM)
    trade.closed_at, trade.close_reason = now, "unpaid"
    return True


def _remind(trade: Trade, now: datetime) -> bool:
    if (trade.status != WAIT_BUYER_CONFIRM_GOODS or trade.paused_at is not None or trade.reminded
            or trade.remind_at is None or trade.remind_at > now):
        return False
    assert trade.confirm_deadline is not None
    trade.reminded = True
    timeline.append(trade, SYSTEM, "message", event="confirm_deadline_reminder")
    _tell(_contact(trade.buyer_id), "confirm_deadline_reminder", trade, deadline=format_time(trade.confirm_deadline))
    return True


def _auto_confirm(trade: Trade, now: datetime) -> bool:
    if (trade.status != WAIT_BUYER_CONFIRM_GOODS or trade.paused_at is not None or trade.confirm_deadline is None
            or trade.confirm_deadline > now or _open_refund(trade) is not None):
        return False
    _finish(trade, "auto_confirm", SYSTEM)
    return True


def _refund_deadline(trade: Trade, now: datetime) -> bool:
    refund = _open_refund(trade)
    if refund is None or refund.disputed or refund.deadline is None or refund.deadline > now:
        return False
    _refund_step(trade, refund, "expire", SYSTEM)
    return True


def sweep() -> dict[str, int]:
    """Apply every due deadline once. Idempotent; safe with several sweepers at once."""
    now = clock.now()
    jobs: list[tuple[str, Any, Callable[[Trade, datetime], bool]]] = [
        ("closed_unpaid", select(Trade.id).where(Trade.status == WAIT_BUYER_PAY, Trade.pay_deadline <= now),
         _expire_unpaid),
        ("reminded", select(Trade.id).where(Trade.status == WAIT_BUYER_CONFIRM_GOODS, Trade.paused_at.is_(None),
                                            Trade.reminded.is_(False), Trade.remind_at <= now), _remind),
        ("auto_confirmed", select(Trade.id).where(Trade.status == WAIT_BUYER_CONFIRM_GOODS, Trade.paused_at.is_(None),
                                                  Trade.confirm_deadline <= now), _auto_confirm),
        ("refund_deadlines", select(Refund.trade_id).where(Refund.status.in_(OPEN_REFUND_STATES),
                                                           Refund.disputed.is_(False), Refund.deadline <= now),
         _refund_deadline),
    ]
    done: dict[str, int] = {}
    for name, stmt, apply in jobs:
        done[name] = sum(_sweep_one(trade_id, apply) for trade_id in _due(stmt))
    return done
