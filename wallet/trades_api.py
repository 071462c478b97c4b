"""HTTP endpoints of escrow trades, their refunds, disputes, evidence and ratings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel

from core import clock
from core.api import endpoint, parse_body, parse_query, respond, respond_json
from core.db import run_in_transaction
from core.errors import Forbidden, NotFound
from core.idempotency import fingerprint, run_idempotent
from core.sql import Viewing
from security.auth import CALLER, current_caller, current_staff, require_token
from security.phones import normalize_phone
from wallet import funds, ledger, limits, timeline, trades
from wallet.card_errors import BankUnavailable, CardNotFound
from wallet.errors import InsufficientFunds, LedgerAccountNotFound
from wallet.funds import BankDeclined
from wallet.guarded import FROM_CALLER_REFUSALS, PASSWORD_REFUSALS, guarded
from wallet.limits import LimitExceeded
from wallet.trade_schemas import (
    AddEvidence,
    Decide,
    DisputeList,
    DisputeOut,
    DisputeQuery,
    EvidenceAdded,
    EvidenceBundle,
    NoBody,
    OpenTrade,
    PaymentPasswordOnly,
    PayTrade,
    RateTrade,
    RatingOut,
    Reason,
    RefundOut,
    RefuseReason,
    ReputationOut,
    ReputationPart,
    RequestRefund,
    Ship,
    Timeline,
    TimelineEntryOut,
    TimelineQuery,
    TradeList,
    TradeListQuery,
    TradeOut,
)
from wallet.trades import (
    AlreadyRated,
    ConflictOfInterest,
    RatingClosed,
    SellerNotFound,
    SellerNotVerified,
    TradeConflict,
)

bp = Blueprint("trades", __name__, url_prefix="/api/v1")


def _out(trade_id: str) -> TradeOut:
    """The trade as its caller sees it (a GET authenticates in the same statement)."""
    trade, refunds = trades.get_trade_with_refunds(CALLER, trade_id)
    return TradeOut.of(trade, current_caller().id, refunds)


@endpoint(bp, "/trades", "POST", summary="Open a trade with a seller (WAIT_BUYER_PAY); Idempotency-Key optional",
          body=OpenTrade, response=TradeOut, status=201, idempotent="optional", location="/trades/{id}",
          errors=(SellerNotFound, SellerNotVerified, LimitExceeded))
def open_trade() -> Response:
    """An ``Idempotency-Key`` is optional here (no money moves yet), but a client that sends one can retry
    after a lost answer without opening a second trade, and gets the first answer again (the trade as it was
    opened, whatever happened to it since)."""
    user_id = current_caller().id
    req = parse_body(OpenTrade)
    seller_phone = normalize_phone(req.seller_phone, "seller_phone")

    def effect() -> tuple[int, dict[str, Any]]:
        trade = trades.open_trade(user_id, seller_phone, req.title, req.amount, req.shipping_fee, req.currency)
        return 201, TradeOut.of(trade, user_id).model_dump(mode="json")

    # The seller as normalised, in the request's fingerprint too: the same number spelt another way is the same request.
    return _key_optional(user_id, req.model_copy(update={"seller_phone": seller_phone}), effect)


def _key_optional(user_id: str, req: BaseModel, effect: Callable[[], tuple[int, dict[str, Any]]]) -> Response:
    """``effect`` under the request's ``Idempotency-Key`` when it has one (``core.idempotency``: a retry with the same
    key and body replays the first answer, marked ``Idempotent-Replayed``), or once as it is when it has none. Either
    way the answer is made in the step's own transaction: it shows the step as it committed, and no read after the
    commit can fail a step that is done (a retry without a key would then be refused by the new state)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, answer = run_in_transaction(effect)
        return respond_json(answer, status)
    request_hash = fingerprint(request.method, request.path, req.model_dump(mode="json"))
    status, answer, replayed = run_idempotent(user_id, key, request_hash, effect)
    response = respond_json(answer, status)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@endpoint(bp, "/trades", "GET", summary="My trades, as buyer or seller", query=TradeListQuery, response=TradeList)
def list_trades() -> Response:
    require_token()
    query = parse_query(TradeListQuery)
    rows, more = trades.list_trades(CALLER, query.role, query.limit, query.starting_after)
    viewer_id = current_caller().id  # authenticated by the page's read
    refunds = trades.refunds_by_trade([t for t in rows if t.paid_amount])
    return respond(TradeList(data=[TradeOut.of(t, viewer_id, refunds.get(t.id)) for t in rows], has_more=more,
                             next_starting_after=rows[-1].id if more and rows else None))


@endpoint(bp, "/trades/<trade_id>", "GET", summary="One trade with its deadlines and refunds", response=TradeOut)
def get_trade(trade_id: str) -> Response:
    return respond(_out(trade_id))


@endpoint(bp, "/trades/<trade_id>/pay", "POST", summary="Pay into escrow", body=PayTrade, response=TradeOut,
          idempotent=True,
          errors=(*FROM_CALLER_REFUSALS,
                  *TradeConflict.answers("buyer_only", "trade_not_payable", "unshipped_trade_limit"), SellerNotVerified,
                  LimitExceeded, InsufficientFunds, CardNotFound, BankDeclined, BankUnavailable))
def pay_trade(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(PayTrade)

    def top_up_shortfall(key: str, request_hash: str) -> None:
        if req.bank_card_id is None:
            return
        trade = trades.get_trade(user_id, trade_id)
        total = trade.amount + trade.shipping_fee
        if (trade.buyer_id != user_id or not trades.payable(trade, clock.now())
                or not run_in_transaction(lambda: trades.seller_verified(trade.seller_id), read_only=True)
                or not run_in_transaction(lambda: limits.fits_today(user_id, total), read_only=True)):
            return  # refused below (buyer_only, trade_not_payable, limit_exceeded, ...) without charging a card
        try:
            available = ledger.wallet_balance(Viewing(user_id), trade.currency).available
        except LedgerAccountNotFound:
            available = 0
        shortfall = total - available
        if shortfall > 0:
            funds.topup_for_request(user_id, req.bank_card_id, shortfall, trade.currency,
                                    funds.request_key(user_id, key, request_hash))

    def effect() -> tuple[int, dict[str, Any]]:
        trade = trades.pay(user_id, trade_id)
        return 200, TradeOut.of(trade, user_id).model_dump(mode="json")

    return guarded(user_id, req, effect, prepare=top_up_shortfall)


def _trade_answer(trade: Any, viewer_id: str) -> tuple[int, dict[str, Any]]:
    """A step's answer: the trade as the step left it, with its refunds (a refused or withdrawn one stays on show)."""
    refunds = trades.refunds_by_trade([trade]).get(trade.id)
    return 200, TradeOut.of(trade, viewer_id, refunds).model_dump(mode="json")


@endpoint(bp, "/trades/<trade_id>/ship", "POST", summary="Seller ships", body=Ship, response=TradeOut,
          idempotent="optional",
          errors=TradeConflict.answers("seller_only", "trade_not_shippable", "refund_in_progress"))
def ship(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(Ship)
    return _key_optional(user_id, req, lambda: _trade_answer(
        trades.ship(user_id, trade_id, req.carrier, req.tracking_number), user_id))


@endpoint(bp, "/trades/<trade_id>/confirm", "POST", summary="Buyer confirms receipt; money to the seller",
          body=PaymentPasswordOnly, response=TradeOut, idempotent=True,
          errors=(*FROM_CALLER_REFUSALS,
                  *TradeConflict.answers("buyer_only", "trade_not_confirmable", "refund_in_progress")))
def confirm(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(PaymentPasswordOnly)

    return guarded(user_id, req, lambda: _trade_answer(trades.confirm(user_id, trade_id), user_id))


@endpoint(bp, "/trades/<trade_id>/extend", "POST", summary="Extend the confirm deadline once", body=NoBody,
          response=TradeOut, idempotent="optional",
          errors=TradeConflict.answers("buyer_only", "trade_not_extendable", "refund_in_progress",
                                               "already_extended"))
def extend(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(NoBody)
    return _key_optional(user_id, req, lambda: _trade_answer(trades.extend(user_id, trade_id), user_id))


@endpoint(bp, "/trades/<trade_id>/cancel", "POST", summary="Cancel before payment", body=NoBody, response=TradeOut,
          idempotent="optional",
          errors=TradeConflict.answers("trade_not_cancellable"))
def cancel(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(NoBody)
    return _key_optional(user_id, req, lambda: _trade_answer(trades.cancel(user_id, trade_id), user_id))


def _refund_answer(refund: Any, status: int = 200) -> tuple[int, dict[str, Any]]:
    return status, RefundOut.of(refund).model_dump(mode="json")


@endpoint(bp, "/trades/<trade_id>/refunds", "POST", summary="Buyer asks for a refund", body=RequestRefund,
          response=RefundOut, status=201, idempotent="optional",
          errors=TradeConflict.answers("buyer_only", "trade_not_refundable", "refund_in_progress",
                                               "refund_limit_reached", "nothing_to_return", "invalid_refund_amount",
                                               "refund_exceeds_held"))
def request_refund(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(RequestRefund)
    return _key_optional(user_id, req, lambda: _refund_answer(
        trades.request_refund(user_id, trade_id, req.amount, req.reason, req.return_goods), 201))


@endpoint(bp, "/trades/<trade_id>/refunds/<refund_id>/agree", "POST", summary="Seller agrees to the refund",
          body=PaymentPasswordOnly, response=RefundOut, idempotent="optional",
          errors=(*PASSWORD_REFUSALS, *TradeConflict.answers("seller_only", "illegal_refund_transition")))
def agree_refund(trade_id: str, refund_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(PaymentPasswordOnly)
    return guarded(user_id, req, lambda: (200, RefundOut.of(trades.agree_refund(user_id, trade_id, refund_id))
                                       .model_dump(mode="json")), key_required=False, from_caller=False)


@endpoint(bp, "/trades/<trade_id>/refunds/<refund_id>/refuse", "POST", summary="Seller refuses the refund",
          body=RefuseReason, response=RefundOut, idempotent="optional",
          errors=TradeConflict.answers("seller_only", "illegal_refund_transition"))
def refuse_refund(trade_id: str, refund_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(RefuseReason)
    return _key_optional(user_id, req, lambda: _refund_answer(
        trades.refuse_refund(user_id, trade_id, refund_id, req.reason)))


@endpoint(bp, "/trades/<trade_id>/refunds/<refund_id>/return", "POST", summary="Buyer sends the goods back",
          body=Ship, response=RefundOut, idempotent="optional",
          errors=TradeConflict.answers("buyer_only", "illegal_refund_transition"))
def return_goods(trade_id: str, refund_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(Ship)
    return _key_optional(user_id, req, lambda: _refund_answer(
        trades.return_goods(user_id, trade_id, refund_id, req.carrier, req.tracking_number)))


@endpoint(bp, "/trades/<trade_id>/refunds/<refund_id>/withdraw", "POST",
          summary="Buyer withdraws the refund request; the trade goes on", body=NoBody, response=RefundOut,
          idempotent="optional",
          errors=TradeConflict.answers("buyer_only", "illegal_refund_transition", "dispute_open"))
def withdraw_refund(trade_id: str, refund_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(NoBody)
    return _key_optional(user_id, req, lambda: _refund_answer(trades.withdraw_refund(user_id, trade_id, refund_id)))


@endpoint(bp, "/trades/<trade_id>/refunds/<refund_id>/receive-return", "POST",
          summary="Seller confirms the returned goods arrived; money back to the buyer", body=PaymentPasswordOnly,
          response=RefundOut, idempotent="optional",
          errors=(*PASSWORD_REFUSALS, *TradeConflict.answers("seller_only", "illegal_refund_transition")))
def receive_return(trade_id: str, refund_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(PaymentPasswordOnly)
    return guarded(user_id, req, lambda: (200, RefundOut.of(trades.receive_return(user_id, trade_id, refund_id))
                                       .model_dump(mode="json")), key_required=False, from_caller=False)


@endpoint(bp, "/trades/<trade_id>/disputes", "POST", summary="Buyer takes a refused refund to the platform",
          body=Reason, response=DisputeOut, status=201, idempotent="optional",
          errors=TradeConflict.answers("buyer_only", "no_refused_refund", "dispute_open"))
def open_dispute(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(Reason)
    return _key_optional(user_id, req, lambda: (
        201, DisputeOut.of(*trades.open_dispute(user_id, trade_id, req.reason)).model_dump(mode="json")))


@endpoint(bp, "/trades/<trade_id>/evidence", "POST", summary="Add evidence (text, attachment hashes)",
          body=AddEvidence, response=EvidenceAdded, status=201, idempotent="optional",
          errors=TradeConflict.answers("evidence_limit_reached"))
def add_evidence(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(AddEvidence)
    return _key_optional(user_id, req, lambda: (201, EvidenceAdded(seq=trades.add_evidence(
        user_id, trade_id, req.text, [a.model_dump() for a in req.attachments])).model_dump(mode="json")))


def _timeline(trade_id: str, user_id: str, staff: bool) -> tuple[Any, list[TimelineEntryOut], timeline.Verification]:
    """The trade, its entries and their verification, all of the one read of the trade with its timeline."""
    trade, rows = trades.get_trade_with_timeline(Viewing(user_id, staff), trade_id)
    return trade, [TimelineEntryOut.of(row) for row in rows], timeline.verify(trade, rows)


@endpoint(bp, "/trades/<trade_id>/timeline", "GET", summary="The trade's history, oldest first",
          query=TimelineQuery, response=Timeline)
def get_timeline(trade_id: str) -> Response:
    user = current_caller()
    query = parse_query(TimelineQuery)
    after = int(query.starting_after) if query.starting_after else None
    rows, more = trades.timeline_page(Viewing(user.id, user.is_staff), trade_id, query.limit, after)
    return respond(Timeline(data=[TimelineEntryOut.of(row) for row in rows], has_more=more,
                            next_starting_after=str(rows[-1].seq) if more else None))


@endpoint(bp, "/trades/<trade_id>/evidence-bundle", "GET", summary="Everything about the trade, hash-chained",
          response=EvidenceBundle)
def evidence_bundle(trade_id: str) -> Response:
    user = current_caller()
    trade, entries, verification = _timeline(trade_id, user.id, user.is_staff)
    refunds = trades.refunds_by_trade([trade]).get(trade.id)
    return respond(EvidenceBundle(trade=TradeOut.of(trade, user.id, refunds), timeline=entries,
                                  head_hash=trade.timeline_hash, intact=verification.intact,
                                  broken_at=verification.broken_at, problem=verification.problem))


@endpoint(bp, "/trades/<trade_id>/ratings", "POST", summary="Rate the other side of a finished trade",
          body=RateTrade, response=RatingOut, status=201, idempotent="optional",
          errors=(RatingClosed, AlreadyRated))
def rate(trade_id: str) -> Response:
    user_id = current_caller().id
    req = parse_body(RateTrade)

    def effect() -> tuple[int, dict[str, Any]]:
        rating = trades.rate(user_id, trade_id, req.score, req.comment)
        return 201, RatingOut(id=rating.id, trade_id=rating.trade_id, score=rating.score, comment=rating.comment,
                              created_at=rating.created_at).model_dump(mode="json")

    return _key_optional(user_id, req, effect)


@endpoint(bp, "/users/<user_id>/reputation", "GET", summary="A user's credit score as seller and as buyer",
          response=ReputationOut)
def reputation(user_id: str) -> Response:
    current_caller()
    if not trades.user_exists(user_id):
        raise NotFound("No such user.")

    def part(role: str) -> ReputationPart:
        rep = trades.reputation(user_id, role)
        return ReputationPart(credit_score=rep.score, positive_rate=rep.positive_rate, count=rep.count)

    return respond(ReputationOut(user_id=user_id, as_seller=part("seller"), as_buyer=part("buyer")))


@endpoint(bp, "/admin/disputes", "GET", summary="Staff: disputes to decide", query=DisputeQuery,
          response=DisputeList,
          errors=(Forbidden,))
def list_disputes() -> Response:
    current_staff()
    query = parse_query(DisputeQuery)
    rows, more = trades.list_disputes(None if query.status == "all" else query.status, query.limit,
                                      query.starting_after)
    return respond(DisputeList(data=[DisputeOut.of(d, currency) for d, currency in rows], has_more=more,
                               next_starting_after=rows[-1][0].id if more and rows else None))


@endpoint(bp, "/admin/disputes/<dispute_id>/decide", "POST", summary="Staff: decide a dispute", body=Decide,
          response=DisputeOut, idempotent="optional",
          errors=(Forbidden, ConflictOfInterest,
                  *TradeConflict.answers("dispute_decided", "invalid_split", "invalid_outcome",
                                         "refund_amount_mismatch")))
def decide(dispute_id: str) -> Response:
    """Moves the money held for the trade. An ``Idempotency-Key`` is optional, as on the seller's refund steps
    (DESIGN 7.1 lists the endpoint without one, and the dispute's state alone keeps a decision from being made twice):
    with a key, a retry after a lost answer replays the decision; without one, a repeat is 409 ``dispute_decided``."""
    staff_id = current_staff().id
    req = parse_body(Decide)

    def effect() -> tuple[int, dict[str, Any]]:
        decided = trades.decide_dispute(staff_id, dispute_id, req.outcome, req.refund_amount, req.reason)
        return 200, DisputeOut.of(*decided).model_dump(mode="json")

    return _key_optional(staff_id, req, effect)
