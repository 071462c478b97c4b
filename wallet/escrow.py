"""The escrow trade state machine (DESIGN 6), as plain Python: no Flask, no database.

Trade states follow the platform that invented them::

    WAIT_BUYER_PAY ──pay──▶ WAIT_SELLER_SEND_GOODS ──ship──▶ WAIT_BUYER_CONFIRM_GOODS ──confirm/auto──▶ TRADE_FINISHED
         │ cancel / unpaid timeout      │ whole amount refunded            │ whole amount refunded
         ▼                              ▼                                  ▼
     TRADE_CLOSED                  TRADE_CLOSED                       TRADE_CLOSED

A dispute decided by the platform ends the trade from either of the paid states: TRADE_FINISHED when some of the
money goes to the seller (release, split), TRADE_CLOSED when all of it goes back to the buyer.

A refund runs beside the trade (at most one open at a time)::

    WAIT_SELLER_AGREE ──agree (or seller silent)──▶ REFUND_SUCCESS                       (no return)
                      ──agree (or seller silent)──▶ WAIT_BUYER_RETURN_GOODS ──return──▶ WAIT_SELLER_CONFIRM_GOODS
                          WAIT_SELLER_CONFIRM_GOODS ──receive (or seller silent)──▶ REFUND_SUCCESS
                      ──refuse──▶ SELLER_REFUSE_BUYER ──dispute──▶ (platform decides) ──▶ REFUND_SUCCESS / REFUND_CLOSED
                      ──buyer withdraws──▶ REFUND_CLOSED
    WAIT_BUYER_RETURN_GOODS ──buyer never ships back, or withdraws──▶ REFUND_CLOSED
    SELLER_REFUSE_BUYER ──buyer never escalates, or withdraws──▶ REFUND_CLOSED
    SELLER_REFUSE_BUYER ──seller ships (a request made before shipping, not taken to the platform)──▶ REFUND_CLOSED

Invariants:

* money only moves on ``pay`` (buyer → the trade's escrow account), a successful refund (escrow → buyer),
  and finishing (escrow → seller, less the seller's fee); the escrow account ends at zero in every final state;
* the total refunded never exceeds what was paid; a refund of everything still held closes the trade;
* while a refund or a dispute is open the confirm clock is paused: its deadline moves by the time it was
  paused, so the buyer never loses time to a seller who stalls;
* deadlines are data on the trade; a sweeper applies them and every application is a transition like the
  others, so running it twice (or in two processes) changes nothing the second time. A party acting on a trade
  whose deadline has passed finds it applied first (``wallet.trades``): the deadline decides, not whoever comes
  between it and the sweeper's next pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Trade states
WAIT_BUYER_PAY = "WAIT_BUYER_PAY"
WAIT_SELLER_SEND_GOODS = "WAIT_SELLER_SEND_GOODS"
WAIT_BUYER_CONFIRM_GOODS = "WAIT_BUYER_CONFIRM_GOODS"
TRADE_FINISHED = "TRADE_FINISHED"
TRADE_CLOSED = "TRADE_CLOSED"
TRADE_STATES = (WAIT_BUYER_PAY, WAIT_SELLER_SEND_GOODS, WAIT_BUYER_CONFIRM_GOODS, TRADE_FINISHED, TRADE_CLOSED)
FINAL_TRADE_STATES = (TRADE_FINISHED, TRADE_CLOSED)

# Refund states
WAIT_SELLER_AGREE = "WAIT_SELLER_AGREE"
SELLER_REFUSE_BUYER = "SELLER_REFUSE_BUYER"
WAIT_BUYER_RETURN_GOODS = "WAIT_BUYER_RETURN_GOODS"
WAIT_SELLER_CONFIRM_GOODS = "WAIT_SELLER_CONFIRM_GOODS"
REFUND_SUCCESS = "REFUND_SUCCESS"
REFUND_CLOSED = "REFUND_CLOSED"
REFUND_STATES = (WAIT_SELLER_AGREE, SELLER_REFUSE_BUYER, WAIT_BUYER_RETURN_GOODS, WAIT_SELLER_CONFIRM_GOODS,
                 REFUND_SUCCESS, REFUND_CLOSED)
OPEN_REFUND_STATES = (WAIT_SELLER_AGREE, SELLER_REFUSE_BUYER, WAIT_BUYER_RETURN_GOODS, WAIT_SELLER_CONFIRM_GOODS)

# Dispute outcomes
RELEASE, REFUND, SPLIT = "release", "refund", "split"


class IllegalTransition(Exception):
    """The action is not allowed in the current state; ``code`` is the stable error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Policy:
    """Deadlines, all configurable (``ESCROW_*`` settings)."""

    pay_within: timedelta = timedelta(hours=24)
    confirm_within: timedelta = timedelta(days=10)
    remind_before: timedelta = timedelta(days=3)
    extend_by: timedelta = timedelta(days=5)
    seller_respond_before_shipping: timedelta = timedelta(days=2)
    seller_respond_after_shipping: timedelta = timedelta(days=5)
    buyer_return_within: timedelta = timedelta(days=7)
    seller_receive_within: timedelta = timedelta(days=10)
    buyer_escalate_within: timedelta = timedelta(days=7)
    rate_within: timedelta = timedelta(days=15)


# --- trade transitions -----------------------------------------------------------------------------------

_TRADE_MOVES: dict[tuple[str, str], str] = {
    (WAIT_BUYER_PAY, "pay"): WAIT_SELLER_SEND_GOODS,
    (WAIT_BUYER_PAY, "cancel"): TRADE_CLOSED,
    (WAIT_BUYER_PAY, "expire"): TRADE_CLOSED,
    (WAIT_SELLER_SEND_GOODS, "ship"): WAIT_BUYER_CONFIRM_GOODS,
    (WAIT_SELLER_SEND_GOODS, "refund_all"): TRADE_CLOSED,
    (WAIT_BUYER_CONFIRM_GOODS, "confirm"): TRADE_FINISHED,
    (WAIT_BUYER_CONFIRM_GOODS, "auto_confirm"): TRADE_FINISHED,
    (WAIT_BUYER_CONFIRM_GOODS, "refund_all"): TRADE_CLOSED,
    (WAIT_BUYER_CONFIRM_GOODS, "extend"): WAIT_BUYER_CONFIRM_GOODS,
    # A dispute decided by the platform: some of the money goes to the seller (release or split), or all of it
    # back to the buyer.
    (WAIT_SELLER_SEND_GOODS, "decide_to_seller"): TRADE_FINISHED,
    (WAIT_SELLER_SEND_GOODS, "decide_all_to_buyer"): TRADE_CLOSED,
    (WAIT_BUYER_CONFIRM_GOODS, "decide_to_seller"): TRADE_FINISHED,
    (WAIT_BUYER_CONFIRM_GOODS, "decide_all_to_buyer"): TRADE_CLOSED,
}

_WRONG_STATE_CODES = {
    "pay": "trade_not_payable",
    "cancel": "trade_not_cancellable",
    "ship": "trade_not_shippable",
    "confirm": "trade_not_confirmable",
    "extend": "trade_not_extendable",
}


def trade_move(status: str, action: str, *, refund_open: bool = False) -> str:
    """The trade state after ``action``. Raises ``IllegalTransition``.

    ``refund_open`` blocks shipping, confirming and extending: the refund must be settled first (shipping over a
    refused request closes it first where ``shipping_closes`` says so).
    """
    target = _TRADE_MOVES.get((status, action))
    if target is None:
        code = _WRONG_STATE_CODES.get(action, "illegal_transition")
        raise IllegalTransition(code, f"cannot {action.replace('_', ' ')} a trade in state {status}")
    if refund_open and action in ("ship", "confirm", "auto_confirm", "extend"):
        raise IllegalTransition("refund_in_progress", f"cannot {action.replace('_', ' ')} while a refund is open")
    return target


def confirm_deadline(shipped_at: datetime, policy: Policy) -> datetime:
    return shipped_at + policy.confirm_within


def extended_deadline(current: datetime, already_extended: bool, policy: Policy) -> datetime:
    """The buyer may push the confirm deadline back once. Raises ``IllegalTransition``."""
    if already_extended:
        raise IllegalTransition("already_extended", "the confirm deadline can be extended only once")
    return current + policy.extend_by


def resumed_deadline(deadline: datetime, paused_at: datetime, now: datetime) -> datetime:
    """A paused clock resumes where it stopped: the deadline moves by how long it was paused."""
    return deadline + max(now - paused_at, timedelta(0))


# --- refunds ---------------------------------------------------------------------------------------------

_REFUND_MOVES: dict[tuple[str, str], str] = {
    (WAIT_SELLER_AGREE, "refuse"): SELLER_REFUSE_BUYER,
    (WAIT_SELLER_AGREE, "withdraw"): REFUND_CLOSED,
    (WAIT_BUYER_RETURN_GOODS, "return"): WAIT_SELLER_CONFIRM_GOODS,
    (WAIT_BUYER_RETURN_GOODS, "expire"): REFUND_CLOSED,
    (WAIT_BUYER_RETURN_GOODS, "withdraw"): REFUND_CLOSED,  # the buyer keeps the goods after all
    (WAIT_SELLER_CONFIRM_GOODS, "receive"): REFUND_SUCCESS,
    (WAIT_SELLER_CONFIRM_GOODS, "expire"): REFUND_SUCCESS,
    (SELLER_REFUSE_BUYER, "dispute"): SELLER_REFUSE_BUYER,  # the dispute decides; the refund waits
    (SELLER_REFUSE_BUYER, "expire"): REFUND_CLOSED,
    (SELLER_REFUSE_BUYER, "ship"): REFUND_CLOSED,  # only where ``shipping_closes`` says so
    (SELLER_REFUSE_BUYER, "withdraw"): REFUND_CLOSED,
    # The platform's decision of the dispute about it: the buyer gets some money back (refund or split), or none.
    (SELLER_REFUSE_BUYER, "decide_to_buyer"): REFUND_SUCCESS,
    (SELLER_REFUSE_BUYER, "decide_nothing_to_buyer"): REFUND_CLOSED,
}


def shipping_closes(status: str, after_shipping: bool, disputed: bool) -> bool:
    """Whether the seller shipping closes the open refund instead of being refused for it: a request made before
    shipping that the seller refused and the buyer has not taken to the platform. The refusal was the seller's answer;
    had it kept the goods from going out until the buyer escalated, let it lapse or withdrew it, a buyer could have
    kept a seller from ever shipping (ask, be refused, withdraw, ask again: no request before shipping is refused for
    their number) and texted them at each turn. Once the goods are out the buyer asks again with the refunds of a
    shipped trade, which pause the confirm clock and can be taken to the platform. A request the seller has not
    answered, or one the platform is deciding, still keeps the goods from going out."""
    return status == SELLER_REFUSE_BUYER and not after_shipping and not disputed


def refund_move(status: str, action: str, *, return_goods: bool = False) -> str:
    """The refund state after ``action`` (``agree`` and its silent twin ``expire`` depend on whether
    goods come back). Raises ``IllegalTransition`` (code ``refund_not_<state>``)."""
    if status == WAIT_SELLER_AGREE and action in ("agree", "expire"):
        return WAIT_BUYER_RETURN_GOODS if return_goods else REFUND_SUCCESS
    target = _REFUND_MOVES.get((status, action))
    if target is None:
        raise IllegalTransition("illegal_refund_transition", f"cannot {action} a refund in state {status}")
    return target


def refund_deadline(status: str, now: datetime, shipped: bool, policy: Policy) -> datetime | None:
    """When silence decides a refund in ``status`` (entered at ``now``), or None for final states."""
    if status == WAIT_SELLER_AGREE:
        return now + (policy.seller_respond_after_shipping if shipped else policy.seller_respond_before_shipping)
    return {
        WAIT_BUYER_RETURN_GOODS: now + policy.buyer_return_within,
        WAIT_SELLER_CONFIRM_GOODS: now + policy.seller_receive_within,
        SELLER_REFUSE_BUYER: now + policy.buyer_escalate_within,
    }.get(status)


def check_refund_amount(amount: int, paid: int, refunded: int) -> None:
    """A refund is positive and at most what the trade still holds. Raises ``IllegalTransition``."""
    if amount <= 0:
        raise IllegalTransition("invalid_refund_amount", "a refund must be positive")
    if amount > paid - refunded:
        raise IllegalTransition("refund_exceeds_held", f"at most {paid - refunded} fen is still held for this trade")


# --- money -----------------------------------------------------------------------------------------------


# R10: merchants pay a technical service fee of 1-1.5 %; person-to-person sellers pay none. A seller's rate, in basis
# points, is 0 or between these two (the database holds every rate to them too: migrations 0024 and 0025).
MIN_FEE_BP, MAX_FEE_BP = 100, 150


def fee_rate_allowed(fee_bp: int) -> bool:
    """None (a person-to-person seller) or a merchant's 1-1.5 %: a rate between is a slip (15 typed for 150)."""
    return fee_bp == 0 or MIN_FEE_BP <= fee_bp <= MAX_FEE_BP


def seller_fee(amount: int, fee_bp: int) -> int:
    """The platform's fee on ``amount`` released to a seller charged ``fee_bp`` basis points (100 bp = 1 %).
    Rounded down, in the seller's favour; person-to-person sellers have ``fee_bp = 0``."""
    if not fee_rate_allowed(fee_bp):
        raise ValueError(f"fee_bp must be 0 or between {MIN_FEE_BP} and {MAX_FEE_BP}")
    return amount * fee_bp // 10_000


def split_amounts(held: int, refund_amount: int | None, outcome: str) -> tuple[int, int]:
    """How a dispute decision divides what the trade holds: ``(to_buyer, to_seller)``. A release or a refund may
    name its refund amount, but only the one it makes (nothing, or all that is held): any other is a mistake to
    answer, not an amount to drop. Raises ``IllegalTransition`` for an impossible split."""
    if outcome in (RELEASE, REFUND):
        to_buyer = 0 if outcome == RELEASE else held
        if refund_amount is not None and refund_amount != to_buyer:
            raise IllegalTransition("refund_amount_mismatch", f"a {outcome} refunds {to_buyer} fen, not"
                                    f" {refund_amount}; to refund part of it, split")
        return to_buyer, held - to_buyer
    if outcome == SPLIT:
        if refund_amount is None or not 0 < refund_amount < held:
            raise IllegalTransition("invalid_split", f"a split refunds more than 0 and less than {held} fen")
        return refund_amount, held - refund_amount
    raise IllegalTransition("invalid_outcome", f"unknown outcome {outcome!r}")
