"""Escrow trade use cases: the state machine of ``wallet.escrow`` applied to rows, money and messages.

Every use case locks the trade row first (``SELECT ... FOR UPDATE``, ``wallet.trade_store``), checks the
transition with the pure rules, moves money through the ledger, appends to the hash-chained timeline, enqueues
its SMS and saves the trade's changed columns, all in one transaction. Two actors racing on one trade (the
buyer confirming while the sweeper auto-confirms, a refund request against a confirmation) queue on that lock:
the first wins, the second finds the new state and is refused with a stable code (or, for the sweeper, skips).

A trade is a ``TradeRecord``, a plain object of its columns, not an ORM object: it is on the path of every
payment (see ``wallet.trade_store``). Refunds, disputes and ratings, far rarer, stay ORM objects. Whether a
refund is open is also a flag on the trade (``refund_open``), set and cleared with the refund's own changes,
so the steps an open refund forbids learn it from the row they lock.

A stranger to a trade gets ``NotFound`` for everything, never "forbidden": trades do not leak.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from core import clock, sql
from core.db import db, in_transaction, run_in_transaction, transaction_info
from core.errors import AppError, NotFound
from core.ids import new_id
from core.pagination import read_page
from notifications.outbox import enqueue
from notifications.templates import format_amount, format_time, mask_phone, short_ref
from wallet import escrow, ledger, limits, timeline, trade_store
from wallet.cards import VERIFIED_SELLER_SQL
from wallet.escrow import (
    OPEN_REFUND_STATES,
    REFUND_SUCCESS,
    TRADE_FINISHED,
    WAIT_BUYER_CONFIRM_GOODS,
    WAIT_BUYER_PAY,
    WAIT_SELLER_AGREE,
    WAIT_SELLER_SEND_GOODS,
    IllegalTransition,
)
from wallet.escrow_models import (
    AWAITING_CONFIRMATION,
    TO_REMIND,
    UNPAID,
    Dispute,
    Rating,
    RatingTotals,
    Refund,
    Trade,
)
from wallet.models import FEES
from wallet.trade_store import COLUMNS, Party, TradeRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
SYSTEM = "system"
_UNPROCESSABLE = {"invalid_refund_amount", "refund_exceeds_held", "invalid_split", "invalid_outcome",
                  "refund_amount_mismatch"}


class TradeConflict(AppError):
    """The action is not allowed in the trade's (or its refund's) current state; ``code`` says which rule."""

    status, title = 409, "Not allowed in this state"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        if code in _UNPROCESSABLE:
            self.status = 422

    @staticmethod
    def answers(*codes: str) -> tuple[tuple[int, str], ...]:
        """(status, code) of a ``TradeConflict`` with each of ``codes``, for ``core.api.endpoint(errors=...)``."""
        return tuple((422 if code in _UNPROCESSABLE else 409, code) for code in codes)


class SellerNotVerified(AppError):
    """Only sellers with a verified identity and a bound card can receive escrow payments (R7). Opening a trade gives
    the same answer for a number that has no account at all, so it cannot be used to learn which numbers have
    accounts."""

    status, code, title = 422, "seller_not_verified", "Seller not verified"


class SellerNotFound(AppError):
    """The seller's phone number is the buyer's own."""

    status, code, title = 404, "seller_not_found", "Seller not found"


class AlreadyRated(AppError):
    """This party already rated this trade."""

    status, code, title = 409, "already_rated", "Already rated"


class ConflictOfInterest(AppError):
    """Staff cannot decide a dispute about a trade they are the buyer or the seller of: a colleague decides it."""

    status, code, title = 403, "conflict_of_interest", "Conflict of interest"


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


# Statements of the hot paths, on the driver's cursor (``core.sql``); the refund and dispute flows use the ORM.
_SELLER = sql.Statement(
    f"SELECT u.id, f.fee_bp, {VERIFIED_SELLER_SQL.format(user='u.id')} AS verified"  # noqa: S608 - constants
    " FROM users u LEFT JOIN seller_settings f ON f.user_id = u.id WHERE u.phone = :phone", boolean=["verified"])
_SELLER_VERIFIED = sql.Statement(f"SELECT {VERIFIED_SELLER_SQL.format(user=':seller_id')} AS verified",
                                 boolean=["verified"])
_PARTIES_OF = sql.Statement("SELECT id, phone, locale FROM users WHERE id IN (:first, :second)")
_KNOWN_PARTIES = "trade_parties"
_CHECKED_SELLERS = "trade_sellers_checked"
_SELLER_CHECK = VERIFIED_SELLER_SQL.format(user="t.seller_id")


def _lock(trade_id: str, *, skip_locked: bool = False, check_seller: bool = False) -> TradeRecord | None:
    """The trade, locked for this transaction; its parties are kept for ``_parties`` until the transaction
    ends, and with ``check_seller`` whether its seller is verified now, for ``seller_verified``."""
    locked = trade_store.lock(trade_id, skip_locked=skip_locked,
                              check_seller=_SELLER_CHECK if check_seller else None)
    if locked is None:
        return None
    info = transaction_info()
    known = info.setdefault(_KNOWN_PARTIES, {})
    known[locked.buyer.id], known[locked.seller.id] = locked.buyer, locked.seller
    if locked.seller_verified is not None:
        info.setdefault(_CHECKED_SELLERS, {})[locked.seller.id] = locked.seller_verified
    return locked.trade


def _party_trade(user_id: str, trade_id: str, *, check_seller: bool = False) -> TradeRecord:
    trade = _lock(trade_id, check_seller=check_seller)
    if trade is None or user_id not in (trade.buyer_id, trade.seller_id):
        raise NotFound("No such trade.")
    return trade


def _as_paying_buyer(user_id: str, trade_id: str) -> TradeRecord:
    """``_as_buyer``, the seller's verification read with the trade (``seller_verified`` answers from it)."""
    return _as_buyer(user_id, trade_id, check_seller=True)


def _as_buyer(user_id: str, trade_id: str, *, check_seller: bool = False) -> TradeRecord:
    trade = _party_trade(user_id, trade_id, check_seller=check_seller)
    if trade.buyer_id != user_id:
        raise TradeConflict("buyer_only", "Only the buyer can do this.")
    return trade


def _as_seller(user_id: str, trade_id: str) -> TradeRecord:
    trade = _party_trade(user_id, trade_id)
    if trade.seller_id != user_id:
        raise TradeConflict("seller_only", "Only the seller can do this.")
    return trade


def _parties(buyer_id: str, seller_id: str) -> dict[str, Party]:
    """A trade's two parties, by id: those of a trade locked in this transaction are known already; otherwise
    one query reads both (without their wallets)."""
    known = transaction_info().get(_KNOWN_PARTIES, {}) if in_transaction() else {}
    if buyer_id in known and seller_id in known:
        return {buyer_id: known[buyer_id], seller_id: known[seller_id]}
    return {row.id: Party(*row) for row in _PARTIES_OF.all(first=buyer_id, second=seller_id)}


def _party(trade: TradeRecord, user_id: str) -> Party:
    return _parties(trade.buyer_id, trade.seller_id)[user_id]


def _wallet(trade: TradeRecord, user_id: str) -> str:
    """The party's wallet in the trade's currency (as read with the locked trade, or opened now)."""
    return _party(trade, user_id).wallet_id or ledger.open_wallet(user_id, trade.currency)


def _tell(to: Party, event: str, trade: TradeRecord, **params: Any) -> None:
    enqueue(to.phone, event, locale=to.locale, user_id=to.id, trade=short_ref(trade.id), **params)


def _open_refund(trade: TradeRecord) -> Refund | None:
    if not trade.refund_open:
        return None
    return db.session.scalars(select(Refund).where(Refund.trade_id == trade.id,
                                                   Refund.status.in_(OPEN_REFUND_STATES))).first()


def _move(trade: TradeRecord, action: str, actor: str, **data: Any) -> None:
    try:
        # An open refund can only forbid a move, so a move allowed even with one needs no look at the refunds.
        target = escrow.trade_move(trade.status, action, refund_open=True)
    except IllegalTransition as exc:
        if exc.code != "refund_in_progress":
            raise TradeConflict(exc.code, str(exc)) from exc
        target = _rules(lambda: escrow.trade_move(trade.status, action, refund_open=trade.refund_open))
    timeline.append(trade, actor, "state", action=action, before=trade.status, after=target, **data)
    trade.status = target


# --- money ------------------------------------------------------------------------------------------------


def _held(trade: TradeRecord) -> int:
    return trade.paid_amount - trade.refunded_amount - trade.released_amount


def _release_to_seller(trade: TradeRecord, amount: int, actor: str) -> int:
    """Pay ``amount`` of the escrow to the seller, less the seller's fee; returns what the seller got."""
    assert trade.escrow_account_id is not None
    fee = escrow.seller_fee(amount, trade.fee_bp)
    seller_wallet = _wallet(trade, trade.seller_id)
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


def _refund_to_buyer(trade: TradeRecord, amount: int, actor: str) -> None:
    assert trade.escrow_account_id is not None
    moved = ledger.transfer(trade.escrow_account_id, _wallet(trade, trade.buyer_id), amount, kind=ledger.REFUND,
                            currency=trade.currency, reference=trade.id)
    trade.refunded_amount += amount
    timeline.append(trade, actor, "money", movement="refund", amount=amount, transfer=moved.id)


def _finish(trade: TradeRecord, action: str, actor: str, at: datetime | None = None) -> None:
    """Release what is held to the seller and finish the trade, as of ``at`` (now unless a deadline finished it then:
    the ratings window counts from it, however late the sweeper applies it)."""
    parties = _parties(trade.buyer_id, trade.seller_id)
    _move(trade, action, actor)
    released = _held(trade)
    net = _release_to_seller(trade, released, actor)
    trade.finished_at = at or clock.now()
    # The seller reads what reached their wallet; the buyer what left escrow for the seller, the fee included: the
    # platform's fee is the seller's business, and less than the buyer paid would read as money gone missing.
    for party, amount in ((trade.seller_id, net), (trade.buyer_id, released)):
        _tell(parties[party], "trade_finished", trade, amount=format_amount(amount))


def _pause(trade: TradeRecord, now: datetime) -> None:
    if trade.status == WAIT_BUYER_CONFIRM_GOODS and trade.paused_at is None:
        trade.paused_at = now


def _resume(trade: TradeRecord, at: datetime) -> None:
    """The confirm clock runs again from ``at``: its deadline (and reminder) move by how long it stood still. A
    deadline that moved is reminded of again, as after an extension: a reminder sent before named the old one."""
    if trade.paused_at is None:
        return
    assert trade.confirm_deadline is not None and trade.remind_at is not None
    moved = escrow.resumed_deadline(trade.confirm_deadline, trade.paused_at, at)
    if moved != trade.confirm_deadline:
        trade.reminded = False
    trade.confirm_deadline = moved
    trade.remind_at = escrow.resumed_deadline(trade.remind_at, trade.paused_at, at)
    trade.paused_at = None


_CAUGHT_UP = "trade_deadlines_applied"


def _catch_up(trade: TradeRecord, now: datetime) -> None:
    """Apply the deadlines of ``trade`` that have passed but that the sweeper has not reached yet, so that a party
    acts on the trade as the sweeper is about to leave it: a trade past its pay deadline is closed, not paid; a
    confirm deadline that passed is not extended or escaped by a late refund request; a seller silent past a
    refund deadline has agreed, and cannot refuse any more. An action whose outcome the deadline has just brought
    about (the buyer confirming a trade the deadline confirmed, the seller agreeing to a refund silence agreed to,
    or confirming returned goods silence received) answers with it (``_done_by_deadline``). When the action is
    refused, this rolls back with it and the sweeper applies the deadline on its next pass; when the action goes
    through, both commit together. (Reminders are only messages: they stay the sweeper's.)"""
    applied = transaction_info().setdefault(_CAUGHT_UP, {}).setdefault(trade.id, set())
    while expired := _expire_refund(trade, now):  # first, each in turn (an agreement by silence starts the return
        applied.add(expired)                       # window): a refund settled by one resumes the confirm clock
    if _expire_unpaid(trade, now):
        applied.add("expire")
    if _auto_confirm(trade, now):
        applied.add("auto_confirm")


def _done_by_deadline(trade: TradeRecord, what: object) -> bool:
    """Whether this transaction's ``_catch_up`` applied ``what`` to the trade: ``"auto_confirm"``, or
    ``(refund_id, status_it_left)`` for a refund deadline."""
    return what in transaction_info().get(_CAUGHT_UP, {}).get(trade.id, ())


def _step(user_check: Callable[[str, str], TradeRecord], user_id: str, trade_id: str,
          change: Callable[[TradeRecord], T]) -> T:
    """Lock the trade as ``user_check`` requires, apply its deadlines that are due (``_catch_up``), then
    ``change``, and save the trade, in the caller's transaction; returns what ``change`` returned."""
    trade = user_check(user_id, trade_id)
    _catch_up(trade, clock.now())
    result = change(trade)
    trade_store.save(trade)
    return result


# --- opening, paying, shipping, confirming ----------------------------------------------------------------


def open_trade(buyer_id: str, seller_phone: str, title: str, amount: int, shipping_fee: int,
               currency: str) -> TradeRecord:
    """A new trade in ``WAIT_BUYER_PAY``. Raises ``SellerNotVerified`` (for a number with no account too: a stranger
    must not learn from it whether the number is registered), ``SellerNotFound`` (the buyer's own number),
    ``LimitExceeded``."""
    limits.check_single(amount + shipping_fee)

    def work() -> TradeRecord:
        seller = _SELLER.one(phone=seller_phone)
        if seller is not None and seller.id == buyer_id:
            raise SellerNotFound("You cannot trade with your own phone number.")
        if seller is None or not seller.verified:
            raise SellerNotVerified("No verified seller has this phone number: only a seller with a verified identity"
                                    " and a bound bank card can be chosen.")
        now, trade_id = clock.now(), new_id("trd")
        trade = TradeRecord(
            id=trade_id, buyer_id=buyer_id, seller_id=seller.id, title=title, amount=amount,
            shipping_fee=shipping_fee, currency=currency, status=WAIT_BUYER_PAY, fee_bp=seller.fee_bp or 0,
            paid_amount=0, refunded_amount=0, released_amount=0, fee_amount=0,
            escrow_account_id=ledger.new_escrow_account(trade_id, currency), carrier=None, tracking_number=None,
            created_at=now, pay_deadline=now + _policy().pay_within, paid_at=None, shipped_at=None,
            confirm_deadline=None, remind_at=None, reminded=False, extended=False, paused_at=None, finished_at=None,
            closed_at=None, close_reason=None, timeline_seq=0, timeline_hash=timeline.GENESIS, refund_open=False)
        # The trade's terms, which ``timeline.verify`` holds the trade's row to: who trades with whom, for what, at
        # which fee, through which escrow account.
        timeline.append(trade, buyer_id, "state", action="open", after=WAIT_BUYER_PAY, title=title, amount=amount,
                        shipping_fee=shipping_fee, buyer=buyer_id, seller=seller.id, currency=currency,
                        fee_bp=trade.fee_bp, escrow_account=trade.escrow_account_id)
        trade_store.insert(trade)  # with the escrow account and the first entry riding along
        return trade

    return run_in_transaction(work)


def seller_verified(seller_id: str) -> bool:
    """R7 at the moment money would go into escrow for ``seller_id``: a verified identity and an active card (a
    seller verified when the trade was opened may have removed every card since). Inside a transaction that locked
    a trade checking its seller (``_lock``), the answer read with that lock."""
    checked = transaction_info().get(_CHECKED_SELLERS, {}) if in_transaction() else {}
    if seller_id in checked:
        return checked[seller_id]
    return bool(_SELLER_VERIFIED.scalar(seller_id=seller_id))


_UNSHIPPED_WITH = sql.Statement("SELECT count(*) FROM trades WHERE buyer_id = :buyer_id AND seller_id = :seller_id"
                                " AND status = :status")


def _check_unshipped(trade: TradeRecord) -> None:
    """Refuse a payment past ``ESCROW_MAX_UNSHIPPED_TRADES_PER_SELLER`` paid trades of this buyer waiting for this
    seller to ship (``unshipped_trade_limit``). Each payment texts the seller, a trade may be of 1 fen, and a refund
    the seller's silence agrees to gives the money back, so without a limit one buyer texted a seller without end at no
    cost but the platform's (found by an audit). Counted after ``limits.consume_daily``, whose row of the buyer's day
    every payment of theirs locks: two payments of one buyer do not race past the limit."""
    limit = current_app.config["ESCROW_MAX_UNSHIPPED_TRADES_PER_SELLER"]
    if _UNSHIPPED_WITH.scalar(buyer_id=trade.buyer_id, seller_id=trade.seller_id,
                              status=WAIT_SELLER_SEND_GOODS) >= limit:
        raise TradeConflict("unshipped_trade_limit", f"you have {limit} paid trades waiting for this seller to ship,"
                            " as many as allowed; pay this one once the seller ships one of them or one is refunded")


def pay(buyer_id: str, trade_id: str) -> TradeRecord:
    """Buyer's wallet → the trade's own escrow account (caller's transaction, under an idempotency key).
    Raises ``TradeConflict`` (``unshipped_trade_limit`` among others), ``SellerNotVerified``, ``InsufficientFunds``,
    ``LimitExceeded``."""

    def change(trade: TradeRecord) -> TradeRecord:
        parties = _parties(trade.buyer_id, trade.seller_id)
        total = trade.amount + trade.shipping_fee
        _move(trade, "pay", buyer_id)
        if not seller_verified(trade.seller_id):
            raise SellerNotVerified("This seller no longer has a verified identity and an active bank card.")
        limits.consume_daily(buyer_id, total)
        _check_unshipped(trade)
        # Opened with the trade; a trade opened before migration 0011's release gets its account now.
        trade.escrow_account_id = trade.escrow_account_id or ledger.escrow_account(trade.id, trade.currency)
        moved = ledger.transfer(_wallet(trade, buyer_id), trade.escrow_account_id, total, kind=ledger.ESCROW_PAY,
                                currency=trade.currency, reference=trade.id)
        timeline.append(trade, buyer_id, "money", movement="pay", amount=total, transfer=moved.id)
        now = clock.now()
        trade.paid_amount, trade.paid_at = total, now
        buyer, seller = parties[trade.buyer_id], parties[trade.seller_id]
        _tell(seller, "trade_paid_ship_now", trade, amount=format_amount(total))
        enqueue(buyer.phone, "balance_payment", locale=buyer.locale, user_id=buyer_id, amount=format_amount(total),
                payee=mask_phone(seller.phone), time=format_time(now))
        return trade

    return run_in_transaction(lambda: _step(_as_paying_buyer, buyer_id, trade_id, change))


def ship(seller_id: str, trade_id: str, carrier: str, tracking_number: str) -> TradeRecord:
    """The seller sends the goods; the confirm clock starts. A refund asked before shipping that the seller refused
    (and the buyer has not taken to the platform) is closed by it (``escrow.shipping_closes``); any other open refund
    refuses it (``refund_in_progress``)."""

    def change(trade: TradeRecord) -> TradeRecord:
        buyer = _party(trade, trade.buyer_id)
        refund = _open_refund(trade) if trade.status == WAIT_SELLER_SEND_GOODS else None
        closes = refund is not None and escrow.shipping_closes(refund.status, refund.after_shipping, refund.disputed)
        if closes:
            _refund_step(trade, refund, "ship", seller_id)
        _move(trade, "ship", seller_id, carrier=carrier, tracking_number=tracking_number)
        now, policy = clock.now(), _policy()
        trade.carrier, trade.tracking_number, trade.shipped_at = carrier, tracking_number, now
        trade.confirm_deadline = escrow.confirm_deadline(now, policy)
        trade.remind_at = trade.confirm_deadline - policy.remind_before
        # One text tells the buyer both: the goods are on their way, and the refused request they might still have
        # taken to the platform is closed (they may ask again once the goods arrive).
        _tell(buyer, "trade_shipped_refund_closed" if closes else "trade_shipped", trade,
              deadline=format_time(trade.confirm_deadline))
        return trade

    return run_in_transaction(lambda: _step(_as_seller, seller_id, trade_id, change))


def confirm(buyer_id: str, trade_id: str) -> TradeRecord:
    """Buyer confirms receipt: escrow → seller (less fee). Caller's transaction, under an idempotency key."""

    def change(trade: TradeRecord) -> TradeRecord:
        if not _done_by_deadline(trade, "auto_confirm"):
            _finish(trade, "confirm", buyer_id)
        return trade

    return run_in_transaction(lambda: _step(_as_buyer, buyer_id, trade_id, change))


def extend(buyer_id: str, trade_id: str) -> TradeRecord:
    def change(trade: TradeRecord) -> TradeRecord:
        _move(trade, "extend", buyer_id)
        assert trade.confirm_deadline is not None
        policy = _policy()
        moved = _rules(lambda: escrow.extended_deadline(trade.confirm_deadline, trade.extended, policy))
        if moved != trade.confirm_deadline:  # reminded of again, as after a pause: a reminder sent named the old one
            trade.remind_at, trade.reminded = moved - policy.remind_before, False
        trade.confirm_deadline, trade.extended = moved, True
        return trade

    return run_in_transaction(lambda: _step(_as_buyer, buyer_id, trade_id, change))


def cancel(user_id: str, trade_id: str) -> TradeRecord:
    def change(trade: TradeRecord) -> TradeRecord:
        _move(trade, "cancel", user_id)
        trade.closed_at, trade.close_reason = clock.now(), "cancelled"
        return trade

    return run_in_transaction(lambda: _step(_party_trade, user_id, trade_id, change))


# --- refunds and disputes ---------------------------------------------------------------------------------


def _refund(trade: TradeRecord, refund_id: str) -> Refund:
    refund = db.session.get(Refund, refund_id)
    if refund is None or refund.trade_id != trade.id:
        raise NotFound("No such refund on this trade.")
    return refund


_DECIDED_AMOUNT = sql.Statement("SELECT refund_amount FROM disputes WHERE trade_id = :trade_id"
                                " AND refund_id = :refund_id AND status = 'decided'")


def _given_back(refund: Refund) -> int:
    """What ``refund`` gave back: its amount once paid (the seller agreed, received the goods, or stayed silent); what
    the platform's decision gave when a dispute decided it (a split less than asked, a refund all that was still
    held); nothing while it is open or when it ended without money (``_GIVEN_BACK`` is the same rule in SQL)."""
    if refund.status != REFUND_SUCCESS:
        return 0
    decided = _DECIDED_AMOUNT.scalar(trade_id=refund.trade_id, refund_id=refund.id) if refund.disputed else None
    return refund.amount if decided is None else int(decided)


def _view(refund: Refund, trade: TradeRecord) -> RefundView:
    """The refund of ``trade`` as answers show it, read in the transaction that changed it."""
    return RefundView(refund.id, refund.status, refund.amount, refund.reason, refund.return_goods, refund.deadline,
                      refund.disputed, refund.created_at, _given_back(refund), trade.currency)


_REFUNDS_ASKED = sql.Statement("SELECT count(*) FROM refunds WHERE trade_id = :trade_id")


def _check_request_limit(trade: TradeRecord, amount: int, shipped: bool) -> None:
    """Refuse a refund request past ``ESCROW_REFUND_REQUESTS_PER_TRADE`` (``refund_limit_reached``). Every request the
    buyer made on the trade counts, however it ended, before shipping and after: each one texts the seller and each
    withdrawal too, so asking and withdrawing without end flooded the seller with SMS at the platform's cost (and,
    after shipping, held the seller's money with a clock paused for good).

    Before shipping one more request is taken, once, if it asks for everything still held: a seller who never ships
    leaves the buyer no other way to the money (no confirming, cancelling or disputing then), and this last request
    is one the seller alone cannot use up (silence or agreement pays it, a refusal can go to the platform, shipping
    sends the goods). After shipping the money moves without one: the buyer confirms, or the deadline does."""
    # Counted under the trade's lock, which every refund request holds: no two requests race past the limit.
    asked, limit = _REFUNDS_ASKED.scalar(trade_id=trade.id), current_app.config["ESCROW_REFUND_REQUESTS_PER_TRADE"]
    held = _held(trade)
    if asked < limit or (not shipped and asked == limit and amount == held):
        return
    then = ("confirm receipt, or wait for the seller (the trade confirms itself at its deadline)" if shipped
            else f"wait for the seller to ship, or ask once more for everything still held ({held} fen)"
            if asked == limit else "wait for the seller to ship")
    raise TradeConflict("refund_limit_reached", f"this trade has had its {asked} refund requests, as many as allowed,"
                        " however they ended; a refund the seller refused can be taken to the platform (open a"
                        f" dispute) while it is open; otherwise {then}")


def request_refund(buyer_id: str, trade_id: str, amount: int, reason: str, return_goods: bool) -> RefundView:
    """The buyer asks for ``amount`` back (the seller is told). A trade takes ``ESCROW_REFUND_REQUESTS_PER_TRADE``
    requests, and before shipping one last for everything still held (``_check_request_limit``). Raises
    ``TradeConflict`` (``trade_not_refundable``, ``refund_in_progress``, ``refund_limit_reached``,
    ``nothing_to_return``)."""

    def change(trade: TradeRecord) -> RefundView:
        if trade.status not in (WAIT_SELLER_SEND_GOODS, WAIT_BUYER_CONFIRM_GOODS):
            raise TradeConflict("trade_not_refundable", f"cannot ask for a refund in state {trade.status}")
        if trade.refund_open:
            raise TradeConflict("refund_in_progress", "a refund is already open on this trade")
        shipped = trade.status == WAIT_BUYER_CONFIRM_GOODS
        _check_request_limit(trade, amount, shipped)
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
        trade.refund_open = True
        _pause(trade, now)
        timeline.append(trade, buyer_id, "refund", action="request", refund=refund.id, amount=amount, reason=reason,
                        return_goods=return_goods)
        assert refund.deadline is not None
        _tell(_party(trade, trade.seller_id), "refund_requested", trade, amount=format_amount(amount),
              deadline=format_time(refund.deadline))
        return _view(refund, trade)

    return run_in_transaction(lambda: _step(_as_buyer, buyer_id, trade_id, change))


def _refund_step(trade: TradeRecord, refund: Refund, action: str, actor: str, *, due: datetime | None = None,
                 **data: Any) -> None:
    """Apply ``action`` to ``refund`` and everything that follows from its new state. ``due`` is when a deadline's
    step took effect (the deadline itself, however late it is applied): the clocks it restarts count from then, so
    a sweeper that comes late, or a party who acts first, neither gains nor loses anyone time."""
    target = _rules(lambda: escrow.refund_move(refund.status, action, return_goods=refund.return_goods))
    now = clock.now()
    at = min(due, now) if due is not None else now
    timeline.append(trade, actor, "refund", action=action, refund=refund.id, before=refund.status, after=target,
                    **data)
    refund.status = target
    trade.refund_open = target in OPEN_REFUND_STATES
    refund.deadline = escrow.refund_deadline(target, at, refund.after_shipping, _policy())
    if target == escrow.WAIT_BUYER_RETURN_GOODS:  # agreed (or silent), goods to come back first, by the deadline
        assert refund.deadline is not None
        _tell(_party(trade, trade.buyer_id), "refund_agreed_return_by", trade,
              amount=format_amount(refund.amount),
              deadline=format_time(refund.deadline))
    elif target == escrow.WAIT_SELLER_CONFIRM_GOODS:  # from now on the seller's silence counts as received
        assert refund.deadline is not None
        _tell(_party(trade, trade.seller_id), "refund_goods_returned", trade, deadline=format_time(refund.deadline))
    if target == REFUND_SUCCESS:
        _pay_refund(trade, refund, actor, now, at)
    elif target == escrow.REFUND_CLOSED:
        refund.resolved_at = now
        _resume(trade, at)
        if action == "expire":  # the buyer let it lapse; both are told, the trade's clock runs again
            parties = _parties(trade.buyer_id, trade.seller_id)
            for party in (trade.buyer_id, trade.seller_id):
                _tell(parties[party], "refund_closed", trade)
        elif action == "withdraw":
            _tell(_party(trade, trade.seller_id), "refund_withdrawn", trade)


def _pay_refund(trade: TradeRecord, refund: Refund, actor: str, now: datetime, at: datetime) -> None:
    """Pay the refund (now); the trade's clock runs again from ``at`` (see ``_refund_step``)."""
    if trade.status == WAIT_BUYER_CONFIRM_GOODS and _held(trade) > refund.amount:
        # The rest may go to the seller in this same transaction (a confirmation, or the confirm deadline, applied
        # right after this refund's deadline by ``_catch_up``): take both wallets in the order a payment between the
        # two parties does, as a split decision does, or the two wait on each other until PostgreSQL breaks it.
        ledger.lock_accounts(_wallet(trade, trade.buyer_id), _wallet(trade, trade.seller_id))
    _refund_to_buyer(trade, refund.amount, actor)
    refund.resolved_at, refund.deadline = now, None
    _tell(_party(trade, trade.buyer_id), "refund_completed", trade, amount=format_amount(refund.amount))
    if actor == SYSTEM:  # the seller's silence agreed (or received the goods back): the seller did nothing to see it
        _tell(_party(trade, trade.seller_id), "refund_paid_on_silence", trade, amount=format_amount(refund.amount))
    if _held(trade) == 0 and trade.released_amount == 0:
        _move(trade, "refund_all", actor)
        trade.closed_at, trade.close_reason = now, "refunded"
        trade.paused_at = None
    else:
        _resume(trade, at)


# The seller's answers that their silence gives at a refund deadline: the state the deadline leaves for each.
_SILENCE_MEANS = {"agree": escrow.WAIT_SELLER_AGREE, "receive": escrow.WAIT_SELLER_CONFIRM_GOODS}


def _seller_refund_step(seller_id: str, trade_id: str, refund_id: str, action: str,
                        after: Callable[[TradeRecord, Refund], None] | None = None, **data: Any) -> RefundView:
    def change(trade: TradeRecord) -> RefundView:
        refund = _refund(trade, refund_id)
        if _done_by_deadline(trade, (refund.id, _SILENCE_MEANS.get(action))):
            return _view(refund, trade)  # the seller's silence already did what the seller asks
        _refund_step(trade, refund, action, seller_id, **data)
        if after is not None:
            after(trade, refund)
        return _view(refund, trade)

    return run_in_transaction(lambda: _step(_as_seller, seller_id, trade_id, change))


def agree_refund(seller_id: str, trade_id: str, refund_id: str) -> RefundView:
    return _seller_refund_step(seller_id, trade_id, refund_id, "agree")


def refuse_refund(seller_id: str, trade_id: str, refund_id: str, reason: str) -> RefundView:
    def after(trade: TradeRecord, refund: Refund) -> None:
        refund.refuse_reason = reason
        assert refund.deadline is not None  # the buyer's to take it to the platform (``_refund_step``)
        _tell(_party(trade, trade.buyer_id), "refund_refused_escalate_by", trade,
              deadline=format_time(refund.deadline))

    return _seller_refund_step(seller_id, trade_id, refund_id, "refuse", after, reason=reason)


def return_goods(buyer_id: str, trade_id: str, refund_id: str, carrier: str, tracking_number: str) -> RefundView:
    def change(trade: TradeRecord) -> RefundView:
        refund = _refund(trade, refund_id)
        _refund_step(trade, refund, "return", buyer_id, carrier=carrier, tracking_number=tracking_number)
        refund.return_carrier, refund.return_tracking_number = carrier, tracking_number
        return _view(refund, trade)

    return run_in_transaction(lambda: _step(_as_buyer, buyer_id, trade_id, change))


def withdraw_refund(buyer_id: str, trade_id: str, refund_id: str) -> RefundView:
    """The buyer takes the refund request back (before it is settled and while the goods have not been sent back;
    not once the platform is deciding it): the trade goes on where its clock stopped. Raises ``TradeConflict``."""

    def change(trade: TradeRecord) -> RefundView:
        refund = _refund(trade, refund_id)
        if refund.disputed and refund.status in OPEN_REFUND_STATES:  # a decided one is settled, as any other
            raise TradeConflict("dispute_open", "the platform is deciding this refund; it cannot be withdrawn")
        _refund_step(trade, refund, "withdraw", buyer_id)
        return _view(refund, trade)

    return run_in_transaction(lambda: _step(_as_buyer, buyer_id, trade_id, change))


def receive_return(seller_id: str, trade_id: str, refund_id: str) -> RefundView:
    return _seller_refund_step(seller_id, trade_id, refund_id, "receive")


def open_dispute(buyer_id: str, trade_id: str, reason: str) -> tuple[Dispute, str]:
    """The buyer escalates their refused refund to the platform (DESIGN 6: the refusal is the seller's answer, so
    taking it further, letting it lapse or withdrawing it is the buyer's choice). Raises ``TradeConflict`` (codes
    ``buyer_only``, ``no_refused_refund``, ``dispute_open``). Returns the dispute and the trade's currency."""

    def change(trade: TradeRecord) -> tuple[Dispute, str]:
        refund = _open_refund(trade)
        if refund is None or refund.status != escrow.SELLER_REFUSE_BUYER or refund.disputed:
            raise TradeConflict("no_refused_refund", "only a refused refund can be taken to the platform")
        now = clock.now()
        refund.disputed, refund.deadline = True, None  # the platform decides now, not the clock
        dispute = Dispute(id=new_id("dsp"), trade_id=trade.id, refund_id=refund.id, opened_by=buyer_id, reason=reason,
                          status="open", created_at=now)
        db.session.add(dispute)
        db.session.flush()
        timeline.append(trade, buyer_id, "dispute", action="open", dispute=dispute.id, reason=reason)
        parties = _parties(trade.buyer_id, trade.seller_id)
        for party in (trade.buyer_id, trade.seller_id):
            _tell(parties[party], "dispute_opened", trade)
        return dispute, trade.currency

    try:
        return run_in_transaction(lambda: _step(_as_buyer, buyer_id, trade_id, change))
    except IntegrityError as exc:
        raise TradeConflict("dispute_open", "this trade already has an open dispute") from exc


def list_disputes(status: str | None, limit: int,
                  starting_after: str | None) -> tuple[list[tuple[Dispute, str]], bool]:
    """A page of disputes (``status`` ones, or all), each with its trade's currency, newest first, and whether more
    remain."""
    stmt = select(Dispute, Trade.currency).join(Trade, Trade.id == Dispute.trade_id).order_by(
        Dispute.id.desc()).limit(limit + 1)
    if status:
        stmt = stmt.where(Dispute.status == status)
    if starting_after is not None:
        stmt = stmt.where(Dispute.id < starting_after)
    rows = run_in_transaction(lambda: [(dispute, currency) for dispute, currency in db.session.execute(stmt)],
                              read_only=True)
    return rows[:limit], len(rows) > limit


def decide_dispute(staff_id: str, dispute_id: str, outcome: str, refund_amount: int | None,
                   reason: str) -> tuple[Dispute, str]:
    """Staff decide: release everything held to the seller, refund it to the buyer, or split it. Raises
    ``NotFound``, ``ConflictOfInterest`` (staff who are a party to the trade), ``TradeConflict``. Returns the
    dispute and the trade's currency."""

    def work() -> tuple[Dispute, str]:
        found = db.session.get(Dispute, dispute_id)
        if found is None:
            raise NotFound("No such dispute.")
        trade = _lock(found.trade_id)
        assert trade is not None
        if staff_id in (trade.buyer_id, trade.seller_id):
            raise ConflictOfInterest("You are a party to this trade: another member of staff must decide it.")
        # Read again under the trade's lock: a decision that committed while this one waited for it shows here,
        # and this one is refused instead of deciding the trade a second time.
        dispute = db.session.get(Dispute, dispute_id, populate_existing=True)
        assert dispute is not None
        if dispute.status != "open":
            raise TradeConflict("dispute_decided", "this dispute was already decided")
        refund = db.session.get(Refund, dispute.refund_id, populate_existing=True)
        assert refund is not None
        now, held = clock.now(), _held(trade)
        to_buyer, to_seller = _rules(lambda: escrow.split_amounts(held, refund_amount, outcome))
        timeline.append(trade, staff_id, "dispute", action="decide", dispute=dispute.id, outcome=outcome,
                        to_buyer=to_buyer, to_seller=to_seller, reason=reason)
        if to_buyer and to_seller:  # a split pays both: take their wallets in the order a payment between them does
            ledger.lock_accounts(_wallet(trade, trade.buyer_id), _wallet(trade, trade.seller_id))
        if to_buyer:
            _refund_to_buyer(trade, to_buyer, staff_id)
        if to_seller:
            _release_to_seller(trade, to_seller, staff_id)
        refund_action = "decide_to_buyer" if to_buyer else "decide_nothing_to_buyer"
        target = _rules(lambda: escrow.refund_move(refund.status, refund_action))
        timeline.append(trade, staff_id, "refund", action=refund_action, refund=refund.id, before=refund.status,
                        after=target)
        refund.status, refund.resolved_at, refund.deadline = target, now, None
        trade.refund_open = False
        _move(trade, "decide_to_seller" if to_seller else "decide_all_to_buyer", staff_id, dispute=dispute.id)
        if to_seller:
            trade.finished_at = now
        else:
            trade.closed_at, trade.close_reason = now, "refunded"
        trade.paused_at = None
        dispute.status, dispute.outcome, dispute.refund_amount = "decided", outcome, to_buyer
        dispute.decision_reason, dispute.decided_by, dispute.decided_at = reason, staff_id, now
        parties = _parties(trade.buyer_id, trade.seller_id)
        for party in (trade.buyer_id, trade.seller_id):
            _tell(parties[party], "dispute_decided", trade, outcome=outcome, amount=format_amount(to_buyer))
        trade_store.save(trade)
        return dispute, trade.currency

    return run_in_transaction(work)


# --- evidence, ratings ------------------------------------------------------------------------------------


_EVIDENCE_GIVEN = sql.Statement("SELECT count(*) FROM trade_timeline WHERE trade_id = :trade_id AND kind = 'evidence'"
                                " AND actor = :actor")


def add_evidence(user_id: str, trade_id: str, text: str | None, attachments: list[dict[str, str]]) -> int:
    """Add a party's evidence to the timeline; returns its sequence number. Each party may add
    ``ESCROW_EVIDENCE_PER_PARTY`` pieces to a trade: everything added is kept in its bundle for good. Raises
    ``TradeConflict`` (``evidence_limit_reached``)."""

    def change(trade: TradeRecord) -> int:
        # Counted under the trade's lock, which every append holds: no two pieces race past the limit.
        if _EVIDENCE_GIVEN.scalar(trade_id=trade.id, actor=user_id) >= current_app.config["ESCROW_EVIDENCE_PER_PARTY"]:
            raise TradeConflict("evidence_limit_reached", "you have added as much evidence to this trade as allowed")
        return timeline.append(trade, user_id, "evidence", text=text, attachments=attachments)

    return run_in_transaction(lambda: _step(_party_trade, user_id, trade_id, change))


# Both databases know this upsert; concurrent ratings of one user queue on the row it locks.
_ADD_TO_TOTALS = text(
    "INSERT INTO rating_totals (user_id, role, score, ratings, positive) VALUES (:user_id, :role, :score, 1, :positive)"
    " ON CONFLICT (user_id, role) DO UPDATE SET score = rating_totals.score + excluded.score,"
    " ratings = rating_totals.ratings + 1, positive = rating_totals.positive + excluded.positive")


def rate(user_id: str, trade_id: str, score: int, comment: str | None) -> Rating:
    def change(trade: TradeRecord) -> Rating:
        now = clock.now()
        if (trade.status != TRADE_FINISHED or trade.finished_at is None
                or now > trade.finished_at + _policy().rate_within):
            raise RatingClosed("Only a finished trade can be rated, within the rating window.")
        rater_is_buyer = user_id == trade.buyer_id
        rating = Rating(id=new_id("rat"), trade_id=trade.id, rater_id=user_id,
                        ratee_id=trade.seller_id if rater_is_buyer else trade.buyer_id,
                        role="seller" if rater_is_buyer else "buyer", score=score, comment=comment, created_at=now)
        db.session.add(rating)
        db.session.flush()  # a second rating of the trade by the same side fails here (AlreadyRated)
        db.session.execute(_ADD_TO_TOTALS, {"user_id": rating.ratee_id, "role": rating.role, "score": score,
                                            "positive": int(score == 1)})
        timeline.append(trade, user_id, "rating", score=score, comment=comment)
        return rating

    try:
        return run_in_transaction(lambda: _step(_party_trade, user_id, trade_id, change))
    except IntegrityError as exc:
        raise AlreadyRated("You already rated this trade.") from exc


_USER_EXISTS = sql.Statement("SELECT EXISTS (SELECT 1 FROM users WHERE id = :user_id) AS found", boolean=["found"])


def user_exists(user_id: str) -> bool:
    return bool(run_in_transaction(lambda: _USER_EXISTS.scalar(user_id=user_id), read_only=True))


@dataclass(frozen=True)
class Reputation:
    score: int
    positive_rate: float | None
    count: int


def reputation(user_id: str, role: str) -> Reputation:
    """Credit score (sum of scores), share of positive ratings and count, for ``user_id`` as ``role``: one row of
    ``rating_totals``, however many ratings there are."""

    def work() -> Reputation:
        totals = db.session.get(RatingTotals, (user_id, role))
        if totals is None:
            return Reputation(0, None, 0)
        return Reputation(totals.score, round(totals.positive / totals.ratings, 4), totals.ratings)

    return run_in_transaction(work, read_only=True)


# --- reads ------------------------------------------------------------------------------------------------


class RefundView(NamedTuple):
    """What a trade's answer shows of one of its refunds."""

    id: str
    status: str
    amount: int
    reason: str
    return_goods: bool
    deadline: datetime | None
    disputed: bool
    created_at: datetime
    refunded_amount: int
    currency: str  # the trade's


# What a refund gave back (``_given_back``), in SQL over a refund ``r`` left-joined to its decided dispute ``d``.
_GIVEN_BACK = "CASE WHEN r.status = 'REFUND_SUCCESS' THEN COALESCE(d.refund_amount, r.amount) ELSE 0 END"
_DECIDED_DISPUTE = "LEFT JOIN disputes d ON d.trade_id = r.trade_id AND d.refund_id = r.id AND d.status = 'decided'"

_TRADE_COLUMNS = ", ".join(f"t.{name}" for name in COLUMNS)
# A trade joined to each of its refunds (most trades have none or one), oldest refund first: one statement.
_TRADE_WITH_REFUNDS = sql.Statement(
    f"SELECT {_TRADE_COLUMNS}, r.id AS r_id, r.status AS r_status, r.amount AS r_amount,"  # noqa: S608 - names
    " r.reason AS r_reason, r.return_goods AS r_return_goods, r.deadline AS r_deadline, r.disputed AS r_disputed,"
    f" r.created_at AS r_created_at, {_GIVEN_BACK} AS r_refunded_amount, t.currency AS r_currency FROM trades t"
    " LEFT JOIN refunds r ON r.trade_id = t.id"
    f" {_DECIDED_DISPUTE} WHERE t.id = :trade_id"
    " AND (:viewer_staff OR :viewer_id IN (t.buyer_id, t.seller_id))"  # the rule of _visible, in SQL
    " ORDER BY r.id",
    utc=[*trade_store.UTC_COLUMNS, "r_deadline", "r_created_at"],
    boolean=[*trade_store.BOOLEAN_COLUMNS, "r_return_goods", "r_disputed"])
_TRADE_PAGES: dict[tuple[str | None, bool, int], sql.Statement] = {}


def _visible(trade: TradeRecord | None, user_id: str, staff: bool) -> TradeRecord:
    """The trade if its viewer may see it (a party, or staff); ``NotFound`` for a stranger, never 403. (The same
    rule is written into ``_TRADE_WITH_REFUNDS``.)"""
    if trade is None or (not staff and user_id not in (trade.buyer_id, trade.seller_id)):
        raise NotFound("No such trade.")
    return trade


def get_trade(user_id: str, trade_id: str, *, staff: bool = False) -> TradeRecord:
    return _visible(run_in_transaction(lambda: trade_store.read(trade_id), read_only=True), user_id, staff)


def get_trade_with_refunds(viewer: sql.Viewer, trade_id: str) -> tuple[TradeRecord, list[RefundView]]:
    """A trade its viewer (``sql.Viewing(user_id, staff)``, or the request's caller) may see and its refunds, in one
    statement. Raises ``NotFound`` as ``get_trade``."""
    rows = run_in_transaction(lambda: viewer.read(_TRADE_WITH_REFUNDS, {"trade_id": trade_id}), read_only=True)
    if not rows:
        raise NotFound("No such trade.")
    return TradeRecord(*rows[0][: len(COLUMNS)]), [RefundView(*row[len(COLUMNS):]) for row in rows
                                                    if row.r_id is not None]


_REFUNDS_OF: dict[int, sql.Statement] = {}


def _refunds_statement(trades: int) -> sql.Statement:
    """The refunds of ``trades`` trades (a page of the list has up to 100), oldest first; built once per count."""
    stmt = _REFUNDS_OF.get(trades)
    if stmt is None:
        names = ", ".join(f":t{i}" for i in range(trades))
        stmt = _REFUNDS_OF[trades] = sql.Statement(
            "SELECT r.trade_id, r.id, r.status, r.amount, r.reason, r.return_goods, r.deadline, r.disputed,"  # noqa: S608
            f" r.created_at, {_GIVEN_BACK} AS refunded_amount FROM refunds r {_DECIDED_DISPUTE}"
            f" WHERE r.trade_id IN ({names}) ORDER BY r.id",  # only generated parameter names
            utc=["deadline", "created_at"], boolean=["return_goods", "disputed"], reads_only=["refunds", "disputes"])
    return stmt


def refunds_by_trade(trades: list[TradeRecord]) -> dict[str, list[RefundView]]:
    """The refunds of each of ``trades`` (already known to be the viewer's), oldest first, in one statement; in the
    caller's transaction if there is one. Only a paid trade can have any, so a caller may leave others out. The
    statement reads no ``trades`` row (each refund's currency is its trade's, given here), so a trade's update still
    waiting to be sent (``core.sql``) goes out with the answer that follows, not before this read."""
    if not trades:
        return {}
    stmt = _refunds_statement(len(trades))
    currencies = {trade.id: trade.currency for trade in trades}

    def read() -> dict[str, list[RefundView]]:
        found: dict[str, list[RefundView]] = {}
        for row in stmt.all({f"t{i}": trade.id for i, trade in enumerate(trades)}):
            found.setdefault(row.trade_id, []).append(RefundView(*row[1:], currencies[row.trade_id]))
        return found

    return run_in_transaction(read, read_only=True)


class TimelineRow(NamedTuple):
    """One timeline entry as stored (``wallet.escrow_models.TimelineEntry``'s hashed columns)."""

    seq: int
    at: str
    actor: str
    kind: str
    data: str
    prev_hash: str
    hash: str


# A trade joined to its timeline, in one statement: the head on the trade and the entries it heads are read from
# one snapshot, so an entry committed meanwhile is either in both or in neither (read one after the other, a new
# entry between them looked like one added behind the trade's back, and the chain like a tampered one).
_TRADE_WITH_TIMELINE = sql.Statement(
    f"SELECT {_TRADE_COLUMNS}, e.seq AS e_seq, e.at AS e_at, e.actor AS e_actor, e.kind AS e_kind,"  # noqa: S608
    " e.data AS e_data, e.prev_hash AS e_prev_hash, e.hash AS e_hash"
    " FROM trades t LEFT JOIN trade_timeline e ON e.trade_id = t.id WHERE t.id = :trade_id"
    " AND (:viewer_staff OR :viewer_id IN (t.buyer_id, t.seller_id))"  # the rule of _visible, in SQL
    " ORDER BY e.seq",
    utc=trade_store.UTC_COLUMNS, boolean=trade_store.BOOLEAN_COLUMNS)


def get_trade_with_timeline(viewer: sql.Viewer, trade_id: str) -> tuple[TradeRecord, list[TimelineRow]]:
    """A trade its viewer may see and its timeline entries in order, as of one moment. Raises ``NotFound`` as
    ``get_trade``."""
    rows = run_in_transaction(lambda: viewer.read(_TRADE_WITH_TIMELINE, {"trade_id": trade_id}), read_only=True)
    if not rows:
        raise NotFound("No such trade.")
    return TradeRecord(*rows[0][: len(COLUMNS)]), [TimelineRow(*row[len(COLUMNS):]) for row in rows
                                                    if row.e_seq is not None]


_TIMELINE_PAGES: dict[tuple[bool, int], sql.Statement] = {}


def _timeline_page(after: bool, rows: int) -> sql.Statement:
    """A page of a trade's timeline, oldest first, for one page size (written into the SQL: see
    ``core.pagination``). The trade is the left side, so a trade its viewer may see answers at least one row
    (with no entry when the page is past the end) and one they may not see answers none."""
    stmt = _TIMELINE_PAGES.get((after, rows))
    if stmt is None:
        stmt = _TIMELINE_PAGES[(after, rows)] = sql.Statement(
            "SELECT e.seq, e.at, e.actor, e.kind, e.data, e.prev_hash, e.hash"  # noqa: S608 - constants and an int
            f" FROM trades t LEFT JOIN trade_timeline e ON e.trade_id = t.id{' AND e.seq > :after' if after else ''}"
            " WHERE t.id = :trade_id AND (:viewer_staff OR :viewer_id IN (t.buyer_id, t.seller_id))"
            f" ORDER BY e.seq LIMIT {int(rows)}")
    return stmt


def timeline_page(viewer: sql.Viewer, trade_id: str, limit: int, after: int | None) -> tuple[list[TimelineRow], bool]:
    """Up to ``limit`` entries of the timeline of a trade its viewer may see, after the entry numbered ``after``,
    oldest first, and whether more remain. Raises ``NotFound`` as ``get_trade``."""
    params = {"trade_id": trade_id} if after is None else {"trade_id": trade_id, "after": after}
    rows = run_in_transaction(lambda: viewer.read(_timeline_page(after is not None, limit + 1), params),
                              read_only=True)
    if not rows:
        raise NotFound("No such trade.")
    entries = [TimelineRow(*row) for row in rows if row.seq is not None]
    return entries[:limit], len(entries) > limit


def _trade_page(role: str | None, after: bool, rows: int) -> sql.Statement:
    """The page query for a role filter, with or without a cursor, for one page size (written into the SQL:
    see ``core.pagination``), built once."""
    stmt = _TRADE_PAGES.get((role, after, rows))
    if stmt is None:
        party = {"buyer": "t.buyer_id = :viewer_id", "seller": "t.seller_id = :viewer_id"}.get(
            role or "", "(t.buyer_id = :viewer_id OR t.seller_id = :viewer_id)")
        stmt = _TRADE_PAGES[(role, after, rows)] = sql.Statement(
            f"SELECT {_TRADE_COLUMNS} FROM trades t WHERE {party}"  # noqa: S608 - constant fragments and an int
            f"{' AND t.id < :starting_after' if after else ''} ORDER BY t.id DESC LIMIT {int(rows)}",
            utc=trade_store.UTC_COLUMNS, boolean=trade_store.BOOLEAN_COLUMNS)
    return stmt


def list_trades(viewer: sql.Viewer, role: str | None, limit: int,
                starting_after: str | None) -> tuple[list[TradeRecord], bool]:
    """A page of the viewer's trades (``sql.Viewing(user_id)``, or the request's caller), newest first, as buyer,
    seller or either; and whether more remain."""
    stmt = _trade_page(role, starting_after is not None, limit + 1)
    params = {} if starting_after is None else {"starting_after": starting_after}
    rows, more = read_page(viewer, stmt, params, limit)
    return [TradeRecord(*row) for row in rows], more


# --- the sweeper ------------------------------------------------------------------------------------------


def _due(stmt: Any) -> list[str]:
    return run_in_transaction(lambda: list(db.session.scalars(stmt.limit(200))))


def _sweep_one(trade_id: str, apply: Callable[[TradeRecord, datetime], bool]) -> bool:
    """Lock one trade (skipping it if someone else holds it) and apply a deadline if it is still due."""

    def work() -> bool:
        trade = _lock(trade_id, skip_locked=True)
        if trade is None or not apply(trade, clock.now()):
            return False
        trade_store.save(trade)
        return True

    return run_in_transaction(work)


def payable(trade: TradeRecord, now: datetime) -> bool:
    """Whether the trade can be paid at ``now``: waiting for payment, and its pay deadline not passed."""
    return trade.status == WAIT_BUYER_PAY and (trade.pay_deadline is None or trade.pay_deadline > now)


def _expire_unpaid(trade: TradeRecord, now: datetime) -> bool:
    if trade.status != WAIT_BUYER_PAY or payable(trade, now):
        return False
    assert trade.pay_deadline is not None
    _move(trade, "expire", SYSTEM)
    trade.closed_at, trade.close_reason = min(trade.pay_deadline, now), "unpaid"  # as of its deadline
    return True


def _remind(trade: TradeRecord, now: datetime) -> bool:
    """Text the buyer that the trade will confirm itself at its deadline, once its reminder is due; not once the
    deadline has passed (a sweeper that was down past it): the confirmation that follows tells the buyer instead."""
    if (trade.status != WAIT_BUYER_CONFIRM_GOODS or trade.paused_at is not None or trade.reminded
            or trade.remind_at is None or trade.remind_at > now):
        return False
    assert trade.confirm_deadline is not None
    if trade.confirm_deadline <= now:
        return False  # ``_auto_confirm`` finishes it, in the same sweep
    trade.reminded = True
    timeline.append(trade, SYSTEM, "message", event="confirm_deadline_reminder")
    _tell(_party(trade, trade.buyer_id), "confirm_deadline_reminder", trade,
          deadline=format_time(trade.confirm_deadline))
    return True


def _auto_confirm(trade: TradeRecord, now: datetime) -> bool:
    if (trade.status != WAIT_BUYER_CONFIRM_GOODS or trade.paused_at is not None or trade.confirm_deadline is None
            or trade.confirm_deadline > now or trade.refund_open):
        return False
    _finish(trade, "auto_confirm", SYSTEM, at=min(trade.confirm_deadline, now))
    return True


def _expire_refund(trade: TradeRecord, now: datetime) -> tuple[str, str] | None:
    """Apply the open refund's deadline if it has passed; ``(refund id, the status it left)``, or None."""
    refund = _open_refund(trade)
    if refund is None or refund.disputed or refund.deadline is None or refund.deadline > now:
        return None
    before = refund.status
    _refund_step(trade, refund, "expire", SYSTEM, due=refund.deadline)
    return refund.id, before


def _refund_deadline(trade: TradeRecord, now: datetime) -> bool:
    return _expire_refund(trade, now) is not None


# Passes of one sweep at most: each applies up to a page of due trades per job (``_due``), so this bounds one sweep's
# work at 100 pages per job; what is left then waits for the next sweep.
_SWEEP_PASSES = 100


class SweepResult(NamedTuple):
    applied: dict[str, int]  # deadlines applied, by kind
    failed: frozenset[str]  # trades whose deadline raised at its last try: logged, and left for the next sweep


def sweep() -> dict[str, int]:
    """``run_sweep``'s counts of applied deadlines, by kind."""
    return run_sweep().applied


def run_sweep() -> SweepResult:
    """Apply every due deadline once: how many of each kind, and which trades could not be swept. Idempotent; safe
    with several sweepers at once.

    A pass applies, per kind of deadline, the due trades of one page; the sweep repeats passes until one applies
    nothing. Applying a deadline can make another due at once (a refund's lapse resumes a confirm clock already past
    its end; a seller's silence agrees to a return whose own deadline passed long ago), and a full page leaves more
    behind it: one pass applied one link of such a chain, or 200 trades, and a sweep run from cron left the rest for
    its next run (found by the liveness audit)."""
    done: dict[str, int] = {}
    failed: set[tuple[str, Callable[[TradeRecord, datetime], bool]]] = set()  # (trade, deadline) that raised last
    for _ in range(_SWEEP_PASSES):
        applied = _sweep_pass(clock.now(), failed)
        for name, count in applied.items():
            done[name] = done.get(name, 0) + count
        if not any(applied.values()):
            break
    return SweepResult(done, frozenset(trade_id for trade_id, _ in failed))


def _sweep_pass(now: datetime, failed: set[Any]) -> dict[str, int]:
    jobs: list[tuple[str, Any, Callable[[TradeRecord, datetime], bool]]] = [
        # Each WHERE names its trades as the partial index it reads does (``escrow_models``), or could not use it.
        ("closed_unpaid", select(Trade.id).where(text(UNPAID), Trade.pay_deadline <= now), _expire_unpaid),
        ("reminded", select(Trade.id).where(text(TO_REMIND), Trade.paused_at.is_(None), Trade.remind_at <= now),
         _remind),
        ("auto_confirmed", select(Trade.id).where(text(AWAITING_CONFIRMATION), Trade.paused_at.is_(None),
                                                  Trade.confirm_deadline <= now), _auto_confirm),
        ("refund_deadlines", select(Refund.trade_id).where(Refund.status.in_(OPEN_REFUND_STATES),
                                                           Refund.disputed.is_(False), Refund.deadline <= now),
         _refund_deadline),
    ]
    done: dict[str, int] = {}
    for name, stmt, apply in jobs:
        done[name] = sum(_sweep_one_safely(trade_id, apply, failed) for trade_id in _due(stmt))
    return done


def _sweep_one_safely(trade_id: str, apply: Callable[[TradeRecord, datetime], bool], failed: set[Any]) -> bool:
    """``_sweep_one``, except that a trade that raises is logged, added to ``failed`` and left for the next pass
    instead of stopping the sweep of every trade after it."""
    try:
        applied = _sweep_one(trade_id, apply)
    except OperationalError:
        raise  # the database is gone: the whole sweep stops, and the worker tries it again
    except Exception:
        log.exception("trade %s: a deadline could not be applied; tried again next sweep", trade_id)
        failed.add((trade_id, apply))
        return False
    failed.discard((trade_id, apply))
    return applied
