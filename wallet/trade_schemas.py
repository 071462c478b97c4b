"""Request and response models of the escrow trade endpoints."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from flask import current_app
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.api import RequestModel
from core.money import MAX_AMOUNT
from core.pagination import cursor
from wallet.escrow import REFUND_STATES, TRADE_STATES
from wallet.escrow_models import Dispute, TimelineEntry, Trade
from wallet.schemas import HIDDEN_CHARACTERS

if TYPE_CHECKING:
    from wallet.trades import RefundView


# Text the other party or staff reads: no control characters and no bidirectional controls, which would make it show
# in another order than written (``wallet.schemas.HIDDEN_CHARACTERS``); a tab and line breaks only in a text of
# several lines (a reason, evidence, a comment), not in a one-line field (a title, carrier, tracking number, file name).
SHOWN = f"[^{HIDDEN_CHARACTERS}]"
ONE_LINE = f"[^{HIDDEN_CHARACTERS}\\t\\n\\r\\u2028\\u2029]"
SHOWN_AS_WRITTEN = f"^{SHOWN}*$"


def words(max_length: int, *, lines: bool = False) -> Any:
    """A field of text that must say something: not empty and not only spaces (``\\s`` is Unicode-aware, so the
    ideographic space U+3000 counts as a space), shown as written (``SHOWN``), on one line unless ``lines``. A blank
    title or reason reads as nothing in the other party's SMS and in staff's dispute list; a blank tracking number
    cannot be followed."""
    char = SHOWN if lines else ONE_LINE
    return Field(min_length=1, max_length=max_length, pattern=f"^{char}*[^{HIDDEN_CHARACTERS}\\s]{char}*$")


Short = words(64)
PaymentPassword = Field(min_length=1, max_length=16)


def states(*names: str | None, description: str) -> Any:
    """A state field, documented with every value it takes (what the database's ``status_known`` checks allow): a
    client codes against them (found by the contract audit: the document said only "a string")."""
    return Field(description=description, json_schema_extra={"enum": list(names)})


class OpenTrade(RequestModel):
    seller_phone: str = Field(min_length=3, max_length=32)
    title: str = words(128)
    amount: int = Field(gt=0, le=MAX_AMOUNT, description="Price of the goods in fen")
    shipping_fee: int = Field(default=0, ge=0, le=MAX_AMOUNT)
    currency: Literal["CNY"] = "CNY"


class PaymentPasswordOnly(RequestModel):
    payment_password: str = PaymentPassword


class PayTrade(RequestModel):
    payment_password: str = PaymentPassword
    bank_card_id: str | None = Field(default=None, min_length=1, max_length=40,
                                     description="Top up the shortfall from this card first (it stays in the "
                                                 "wallet if the payment then fails)")


class Ship(RequestModel):
    carrier: str = Short
    tracking_number: str = Short


class NoBody(RequestModel):
    pass


class RequestRefund(RequestModel):
    amount: int = Field(gt=0, le=MAX_AMOUNT)
    currency: Literal["CNY"] = Field(default="CNY", description="The trade's currency (DESIGN 3: amounts come with"
                                     " their currency; trades are opened in CNY)")
    reason: str = words(500, lines=True)
    return_goods: bool = False


class Reason(RequestModel):
    reason: str = words(1000, lines=True)


class RefuseReason(RequestModel):
    """Why the seller refuses a refund: as long as the buyer's reason for asking may be (``refunds`` keeps 500)."""

    reason: str = words(500, lines=True)


class Attachment(RequestModel):
    name: str = words(200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str | None = Field(default=None, max_length=500)


class AddEvidence(RequestModel):
    """Text, attachment hashes, or both: a piece with neither is refused (it would say nothing, yet be kept in the
    trade's chain for good and count toward ESCROW_EVIDENCE_PER_PARTY)."""

    text: str | None = Field(default=None, max_length=4000, pattern=SHOWN_AS_WRITTEN)
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def says_something(self) -> AddEvidence:
        if not self.attachments and not (self.text or "").strip():
            raise ValueError("give text or at least one attachment")
        return self


class RateTrade(RequestModel):
    score: Literal[-1, 0, 1]

    @field_validator("score", mode="before")
    @classmethod
    def number(cls, value: object) -> object:
        # A literal matches by equality, strict or not, and True == 1: true was a good rating, false a neutral one.
        if isinstance(value, bool):
            raise ValueError("give 1, 0 or -1, not a boolean")
        return value
    comment: str | None = Field(default=None, max_length=500, pattern=SHOWN_AS_WRITTEN)


class Decide(RequestModel):
    outcome: Literal["release", "refund", "split"]
    refund_amount: int | None = Field(default=None, ge=0, le=MAX_AMOUNT,
                                      description="Fen back to the buyer: required for a split; a release or a"
                                                  " refund may give only the amount it refunds (0 for a release)")
    currency: Literal["CNY"] = Field(default="CNY", description="The trade's currency, that of refund_amount")
    reason: str = words(1000, lines=True)

    @model_validator(mode="after")
    def zero_only_with_a_release(self) -> Decide:
        # Zero is what a release refunds; a split or a refund of nothing is malformed, as it was before zero was taken.
        if self.refund_amount == 0 and self.outcome != "release":
            raise ValueError("refund_amount: 0 is a release's; a split or a refund gives back more than nothing")
        return self


class TradeListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["buyer", "seller"] | None = None
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = cursor("trd")


class RefundOut(BaseModel):
    id: str
    status: str = states(*REFUND_STATES, description="WAIT_SELLER_AGREE, SELLER_REFUSE_BUYER (the buyer may take it"
                         " to the platform), WAIT_BUYER_RETURN_GOODS and WAIT_SELLER_CONFIRM_GOODS are open;"
                         " REFUND_SUCCESS and REFUND_CLOSED are final")
    amount: int = Field(description="Fen the buyer asked for")
    refunded_amount: int = Field(description="Fen this refund gave back: its amount once paid; when the platform"
                                 " decided a dispute about it, what the decision gave (a split less than asked, a"
                                 " refund all that was still held); 0 while it is open or when it ended without money."
                                 " A trade's refunds add up to its refunded_amount")
    currency: str = Field(description="The trade's currency, that of both amounts")
    reason: str
    return_goods: bool
    deadline: datetime | None
    disputed: bool
    created_at: datetime

    @classmethod
    def of(cls, refund: RefundView) -> RefundOut:
        return cls(id=refund.id, status=refund.status, amount=refund.amount, refunded_amount=refund.refunded_amount,
                   currency=refund.currency, reason=refund.reason, return_goods=refund.return_goods,
                   deadline=refund.deadline, disputed=refund.disputed, created_at=refund.created_at)


class Deadlines(BaseModel):
    pay_by: datetime | None
    confirm_by: datetime | None = Field(description="While the clock is paused, where it stood when it stopped: once "
                                        "it resumes it moves on by the time paused (confirm_by + resumed - "
                                        "paused_since)")
    remind_at: datetime | None
    paused: bool
    paused_since: datetime | None = Field(description="When an open refund or dispute stopped the confirm clock")
    rate_by: datetime | None = Field(description="A finished trade: the last moment either party may rate it"
                                     " (finished_at + ESCROW_RATE_DAYS, this moment included); null until it finishes"
                                     " and for a closed trade")


class TradeOut(BaseModel):
    id: str
    status: str = states(*TRADE_STATES, description="TRADE_FINISHED and TRADE_CLOSED are final")
    role: Literal["buyer", "seller", "staff"]
    buyer_id: str
    seller_id: str
    title: str
    amount: int
    shipping_fee: int
    currency: str
    paid_amount: int
    refunded_amount: int
    released_amount: int
    fee_amount: int
    carrier: str | None
    tracking_number: str | None
    extended: bool
    deadlines: Deadlines
    refunds: list[RefundOut] = Field(default_factory=list, description="Every refund asked for on this trade,"
                                     " oldest first, whatever became of it")
    created_at: datetime
    paid_at: datetime | None
    shipped_at: datetime | None
    finished_at: datetime | None
    closed_at: datetime | None
    close_reason: str | None

    @classmethod
    def of(cls, trade: Trade, viewer_id: str, refunds: list[RefundView] | None = None) -> TradeOut:
        role = "buyer" if viewer_id == trade.buyer_id else "seller" if viewer_id == trade.seller_id else "staff"
        return cls(
            id=trade.id, status=trade.status, role=role, buyer_id=trade.buyer_id, seller_id=trade.seller_id,
            title=trade.title, amount=trade.amount, shipping_fee=trade.shipping_fee, currency=trade.currency,
            paid_amount=trade.paid_amount, refunded_amount=trade.refunded_amount,
            released_amount=trade.released_amount, fee_amount=trade.fee_amount, carrier=trade.carrier,
            tracking_number=trade.tracking_number, extended=trade.extended,
            deadlines=Deadlines(pay_by=trade.pay_deadline if trade.status == "WAIT_BUYER_PAY" else None,
                                confirm_by=trade.confirm_deadline if trade.status == "WAIT_BUYER_CONFIRM_GOODS"
                                else None,
                                remind_at=trade.remind_at if trade.status == "WAIT_BUYER_CONFIRM_GOODS" else None,
                                paused=trade.paused_at is not None,
                                paused_since=trade.paused_at if trade.status == "WAIT_BUYER_CONFIRM_GOODS" else None,
                                rate_by=trade.finished_at + timedelta(days=current_app.config["ESCROW_RATE_DAYS"])
                                if trade.status == "TRADE_FINISHED" and trade.finished_at is not None else None),
            refunds=[RefundOut.of(r) for r in refunds or []],
            created_at=trade.created_at, paid_at=trade.paid_at, shipped_at=trade.shipped_at,
            finished_at=trade.finished_at, closed_at=trade.closed_at, close_reason=trade.close_reason,
        )


class TradeList(BaseModel):
    data: list[TradeOut]
    has_more: bool
    next_starting_after: str | None = None


class TimelineEntryOut(BaseModel):
    seq: int
    at: str = Field(description="When the entry was written: RFC 3339 in UTC ending in +00:00, not Z, since the hash"
                    " covers this text as stored (2026-01-15T08:00:00.123456+00:00)")
    actor: str
    kind: str
    data: dict[str, Any] | str = Field(description="What the entry records; the stored text itself, as a string, only"
                                       " when that is not a JSON object (a rewritten entry, which the evidence bundle"
                                       " reports as not intact)")
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, entry: TimelineEntry | Any) -> TimelineEntryOut:
        """From a stored entry, or a row of its columns (``trades.TimelineRow``)."""
        return cls(seq=entry.seq, at=entry.at, actor=entry.actor, kind=entry.kind, data=_stored(entry.data),
                   prev_hash=entry.prev_hash, hash=entry.hash)


def _stored(text: str) -> dict[str, Any] | str:
    """An entry's data as the object it holds, or its text when it holds none (found by the followups audit: a
    rewritten entry's text that was not a JSON object made the evidence bundle and the timeline a 500)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return data if isinstance(data, dict) else text


class Timeline(BaseModel):
    """Oldest first; ``next_starting_after`` (an entry's ``seq``) is the cursor of the next page while ``has_more``.
    The whole chain, with its head and its verification, is the evidence bundle."""

    data: list[TimelineEntryOut]
    has_more: bool
    next_starting_after: str | None = None


class TimelineQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = Field(default=None, pattern=r"^[0-9]{1,9}$", description="An entry's seq")


class EvidenceAdded(BaseModel):
    seq: int


class EvidenceBundle(BaseModel):
    """The whole of a trade's history, hash-chained so that anyone can check it without our code: for entry n
    (``seq`` 1, 2, ...), ``hash`` is the lowercase hex SHA-256 of the UTF-8 bytes of ``prev_hash`` followed by the
    canonical JSON of ``{"actor", "at", "data", "kind", "seq"}`` as the entry gives them (keys sorted at every
    level, no whitespace, characters other than the ones JSON must escape written as they are: RFC 8785 for these
    values, which are strings, integers, booleans, null, arrays and objects); ``prev_hash`` of entry 1 is 64 zeros,
    each next ``prev_hash`` is the ``hash`` before it, and ``head_hash`` is the last ``hash``. ``intact`` is our own
    check of the same, and that the trade agrees with its chain: with the terms its opening entry records (buyer,
    seller, title, amount, shipping fee, currency, fee rate, escrow account) and with the sums of its money entries
    (paid: ``pay``; refunded: ``refund``; released: ``release`` and ``fee``). ``problem`` says what does not."""

    trade: TradeOut
    timeline: list[TimelineEntryOut]
    head_hash: str
    intact: bool
    broken_at: int | None
    problem: str | None = None


class RatingOut(BaseModel):
    id: str
    trade_id: str
    score: int
    comment: str | None
    created_at: datetime


class ReputationPart(BaseModel):
    credit_score: int = Field(description="The sum of the ratings' scores (+1 good, 0 neutral, -1 bad)")
    positive_rate: float | None = Field(description="Good ratings as a share of all ratings, neutral ones included"
                                        " (0 to 1, rounded to 4 decimals); null with no ratings")
    count: int = Field(description="How many ratings")


class ReputationOut(BaseModel):
    user_id: str
    as_seller: ReputationPart
    as_buyer: ReputationPart


class DisputeOut(BaseModel):
    id: str
    trade_id: str
    refund_id: str
    status: str = states("open", "decided", description="Open until staff decide it")
    reason: str
    outcome: str | None = states("release", "refund", "split", None, description="The decision; null while open")
    refund_amount: int | None
    currency: str = Field(description="The trade's currency, that of refund_amount")
    decision_reason: str | None
    created_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, dispute: Dispute, currency: str) -> DisputeOut:
        return cls(id=dispute.id, trade_id=dispute.trade_id, refund_id=dispute.refund_id, status=dispute.status,
                   reason=dispute.reason, outcome=dispute.outcome, refund_amount=dispute.refund_amount,
                   currency=currency, decision_reason=dispute.decision_reason, created_at=dispute.created_at,
                   decided_at=dispute.decided_at)


class DisputeList(BaseModel):
    """Newest first; ``next_starting_after`` is the cursor of the next page while ``has_more``."""

    data: list[DisputeOut]
    has_more: bool
    next_starting_after: str | None = None


class DisputeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # "all" for every dispute: a query string has no null, so an optional null here was offered and unreachable.
    status: Literal["open", "decided", "all"] = "open"
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = cursor("dsp")
