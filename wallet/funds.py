"""Money in, out and across: top-up from a card, withdrawal to a card, paying a phone number.

Every use case here is called by its endpoint inside ``core.idempotency.run_idempotent`` (so a retried
request has one effect) after ``security.accounts.authorize_payment`` checked the payment password.

Top-up (two steps, so a crash between the bank and our books loses nothing):
    1. ``create_topup``: a ``pending`` top-up row with the reference the bank will know it by, committed with
       the idempotency key.
    2. ``complete_topup``: ask the bank to debit the card (idempotent by reference; outside any transaction, so
       a slow bank holds up no one else), then, with the top-up row locked, credit the wallet from that bank's
       clearing account and mark it ``succeeded`` (or ``failed``) in one transaction. If we crash after the bank
       answered, the row is still ``pending``; the retry (the client's, or the worker's ``retry_pending_topups``)
       asks the bank again with the same reference and gets the same answer, so the card is charged once and the
       wallet credited once.

Withdrawal (asynchronous):
    ``request_withdrawal`` holds the amount on the wallet (wallet → bank clearing, pending) and records a
    ``pending`` withdrawal, in one transaction. ``process_withdrawals`` (the worker) claims it for an attempt,
    submits it to the bank (idempotent by reference) outside any transaction, then polls: ``succeeded`` posts
    the hold, ``failed`` voids it (the money is back). A bank that does not answer is retried with backoff;
    after ``WITHDRAWAL_MAX_AGE_SECONDS`` the withdrawal is failed back to the user only if the bank confirms it
    never received the payout and never accepted it (a payout it accepted waits for its outcome however long),
    so the money is never lost and never paid twice. A withdrawal of a frozen account that the bank has not received
    is failed back (``account_frozen``: ``security.freezes``): at once when it was never sent, and after the bank
    says it has no such payout when an earlier attempt got no answer (it is never submitted again while frozen).
    Withdrawal holds carry no expiry: the sweeper must never release money the bank may be paying out.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError, OperationalError

from core import clock, sql
from core.db import db, detached, run_in_transaction
from core.errors import AppError, NotFound
from core.ids import new_id
from notifications.outbox import enqueue
from notifications.templates import format_amount, format_time, mask_card, mask_phone
from security import freezes
from security.identity import verified_real_name
from security.models import User
from wallet import ledger, limits
from wallet.banks import BankResult, BankUnavailable, PayoutNotFound, PayoutStatus
from wallet.card_models import BankCard
from wallet.cards import gateway, get_card_for_user
from wallet.errors import InsufficientFunds
from wallet.funds_models import FAILED, PENDING, SUBMITTED, SUCCEEDED, TopUp, Withdrawal
from wallet.models import BANK_CLEARING

log = logging.getLogger(__name__)


class RecipientNotFound(AppError):
    """No account has the phone number being paid."""

    status, code, title = 404, "recipient_not_found", "Recipient not found"


class CannotPaySelf(AppError):
    """The payer named their own phone number."""

    status, code, title = 422, "cannot_pay_self", "Cannot pay yourself"


class IdentityNotVerified(AppError):
    """Withdrawals need a verified real-name identity (R7)."""

    status, code, title = 422, "identity_not_verified", "Identity not verified"


class BankDeclined(AppError):
    """The bank refused to debit the card (``reason`` says why); nothing was credited."""

    status, code, title = 422, "bank_declined", "The bank declined"


class BankTimeout(BankUnavailable):
    """The bank did not answer; the top-up stays pending and is completed by a retry with the same key."""

    title = "The bank did not answer"


def _user(user_id: str) -> User:
    user = db.session.get(User, user_id)
    assert user is not None
    return user


# --- top-up ---------------------------------------------------------------------------------------------


def create_topup(user_id: str, card_id: str, amount: int, currency: str, request_key: str | None = None) -> TopUp:
    """Record a pending top-up from one of the user's cards (inside the caller's transaction).

    Raises ``NotFound`` for a card that is not the user's, ``LimitExceeded`` above the per-transaction limit.
    """
    limits.check_single(amount)
    # Locked: a removal waits for this top-up to be recorded, then finds it pending and refuses (``CardInUse``).
    get_card_for_user(user_id, card_id, for_update=True)
    now = clock.now()
    topup = TopUp(id=new_id("top"), user_id=user_id, card_id=card_id, amount=amount, currency=currency,
                  status=PENDING, created_at=now, request_key=request_key)
    db.session.add(topup)
    db.session.flush()
    return topup


def complete_topup(topup_id: str) -> TopUp:
    """Ask the bank to debit the card and credit the wallet; a no-op once the top-up is settled.

    The bank is asked outside any transaction: however long it takes (or hangs), no row waits for it, nor on SQLite
    any other writer. Its answer is then applied with the top-up row locked, unless a concurrent completion (a client
    retry, the worker) applied it first: the bank answers the same reference with the same result, so either
    applies the same thing once.

    Raises ``BankDeclined`` (the top-up is ``failed``) and ``BankTimeout`` (it stays ``pending``: the bank did not
    answer, or has not settled the debit yet)."""

    def ask() -> tuple[str, str | None, int] | None:
        topup = db.session.get(TopUp, topup_id)
        assert topup is not None
        if topup.status != PENDING:
            return None
        card = db.session.get(BankCard, topup.card_id)
        assert card is not None
        return card.bank_code, card.bank_token, topup.amount

    def settle(result: BankResult | None) -> TopUp:
        topup = db.session.get(TopUp, topup_id, with_for_update=True)
        assert topup is not None
        if topup.status != PENDING:
            return topup
        card = db.session.get(BankCard, topup.card_id)
        assert card is not None
        now = clock.now()
        if result is None:
            # removed (``create_topup`` locks the card against this; older rows may not): the bank was not asked.
            # A card removed after the bank answered still gets that answer applied: it may have been debited.
            topup.status, topup.failure_reason, topup.completed_at = FAILED, "card_removed", now
            return topup
        topup.bank_reference, topup.completed_at = result.bank_reference, now
        if not result.ok:
            topup.status, topup.failure_reason = FAILED, result.reason
            return topup
        clearing = ledger.system_account(BANK_CLEARING, card.bank_code, topup.currency)
        wallet = ledger.open_wallet(topup.user_id, topup.currency)
        posted = ledger.transfer(clearing, wallet, topup.amount, kind=ledger.TOPUP, currency=topup.currency,
                                 reference=topup.id)
        topup.status, topup.transfer_id = SUCCEEDED, posted.id
        user = _user(topup.user_id)
        enqueue(user.phone, "topup_credited", locale=user.locale, user_id=user.id,
                amount=format_amount(topup.amount), card=mask_card(card.last4), time=format_time(now))
        return topup

    pending = run_in_transaction(ask, read_only=True)
    result = None
    if pending is not None and pending[1] is not None:
        bank_code, token, amount = pending
        try:
            result = gateway().debit(bank_code, token, amount, reference=topup_id)
        except BankUnavailable as exc:
            raise BankTimeout("The bank did not answer; retry with the same Idempotency-Key.") from exc
        if result.status not in (SUCCEEDED, FAILED):  # still processing at the bank: no money to credit yet
            raise BankTimeout("The bank has not settled the debit yet; retry with the same Idempotency-Key.")
    topup = run_in_transaction(lambda: detached(settle(result)))  # read below, and by the caller
    if topup.status == FAILED:
        raise BankDeclined("The bank declined to debit this card.", reason=topup.failure_reason,
                           topup_id=topup.id)
    return topup


def request_key(user_id: str, key: str, request_hash: str) -> str:
    """What names the top-up made for a request: the user, the Idempotency-Key and the request's fingerprint
    (``core.idempotency.fingerprint``), so a retry finds its top-up, and the same key on another request (another
    trade or card, also once the key has expired and been purged) makes its own."""
    return hashlib.sha256(f"{user_id}\n{key}\n{request_hash}".encode()).hexdigest()


def topup_for_request(user_id: str, card_id: str, amount: int, currency: str, request_key: str) -> TopUp:
    """The top-up belonging to another request (created and completed the first time, found after).
    Raises what ``create_topup`` and ``complete_topup`` raise."""
    find = select(TopUp.id).where(TopUp.request_key == request_key)
    topup_id = run_in_transaction(lambda: db.session.scalars(find).first())
    if topup_id is None:
        try:
            topup_id = run_in_transaction(
                lambda: create_topup(user_id, card_id, amount, currency, request_key=request_key).id)
        except IntegrityError:  # a concurrent duplicate of the request created it first
            topup_id = run_in_transaction(lambda: db.session.scalars(find).one())
    return complete_topup(topup_id)


def retry_pending_topups(older_than: timedelta = timedelta(minutes=1), limit: int = 100) -> int:
    """Worker task: finish top-ups left pending by a crash or a bank timeout; returns how many settled. One the bank
    does not answer about waits before its next try (``_put_off``), so top-ups a bank keeps silent about never fill
    the batch that a top-up already charged at another bank is waiting in."""
    now = clock.now()
    due = run_in_transaction(lambda: list(db.session.scalars(
        select(TopUp.id).where(TopUp.status == PENDING, TopUp.created_at <= now - older_than,
                               or_(TopUp.next_attempt_at.is_(None), TopUp.next_attempt_at <= now))
        .order_by(TopUp.next_attempt_at.nulls_first(), TopUp.created_at).limit(limit))))
    settled = 0
    for topup_id in due:
        try:
            complete_topup(topup_id)
            settled += 1
        except BankDeclined:
            settled += 1
        except BankTimeout:
            run_in_transaction(lambda topup_id=topup_id: _put_off(topup_id))
        except Exception:  # one top-up that cannot be finished must not keep the rest of the batch waiting
            log.exception("top-up %s could not be finished; it stays pending", topup_id)
            run_in_transaction(lambda topup_id=topup_id: _put_off(topup_id))
    return settled


def _put_off(topup_id: str) -> None:
    """Let a pending top-up the worker could not finish wait before its next try: as long as it has been pending
    (at least ``WITHDRAWAL_RETRY_SECONDS``, at most ten minutes), with jitter."""
    topup = db.session.get(TopUp, topup_id, with_for_update=True)
    if topup is None or topup.status != PENDING:
        return
    now = clock.now()
    base = current_app.config["WITHDRAWAL_RETRY_SECONDS"]
    wait = min(max((now - topup.created_at).total_seconds(), base), 600.0)
    topup.next_attempt_at = now + timedelta(seconds=random.uniform(wait, wait * 1.5))


# --- withdrawal -----------------------------------------------------------------------------------------


def request_withdrawal(user_id: str, card_id: str, amount: int, currency: str) -> Withdrawal:
    """Hold ``amount`` on the wallet for a payout to one of the user's cards (caller's transaction).

    Raises ``IdentityNotVerified``, ``NotFound`` (card), ``LimitExceeded``, ``InsufficientFunds``."""
    if verified_real_name(user_id) is None:
        raise IdentityNotVerified("Verify your identity before withdrawing.")
    card = get_card_for_user(user_id, card_id, for_update=True)  # not removable until this commits
    # Counted on the day of ``created_at``, which a failure gives back to: the same moment, taken before the count
    # may wait for the day's usage row (another payment of the user), so that midnight cannot pass in between.
    withdrawal_id, now = new_id("wd"), clock.now()
    limits.consume_daily(user_id, amount, at=now)
    wallet = ledger.open_wallet(user_id, currency)
    clearing = ledger.system_account(BANK_CLEARING, card.bank_code, currency)
    hold = ledger.create_hold(wallet, clearing, amount, kind=ledger.WITHDRAWAL, currency=currency,
                              reference=withdrawal_id)
    withdrawal = Withdrawal(id=withdrawal_id, user_id=user_id, card_id=card_id, amount=amount, currency=currency,
                            hold_id=hold.id, status=PENDING, attempts=0, next_attempt_at=now, created_at=now)
    db.session.add(withdrawal)
    user = _user(user_id)
    enqueue(user.phone, "withdrawal_requested", locale=user.locale, user_id=user_id,
            amount=format_amount(amount), card=mask_card(card.last4), time=format_time(now))
    db.session.flush()
    return withdrawal


def get_withdrawal(user_id: str, withdrawal_id: str) -> Withdrawal:
    """One of the user's withdrawals; another user's is ``NotFound``."""
    withdrawal = run_in_transaction(lambda: db.session.get(Withdrawal, withdrawal_id))
    if withdrawal is None or withdrawal.user_id != user_id:
        raise NotFound("No such withdrawal.")
    return withdrawal


def _settle(withdrawal: Withdrawal, card: BankCard, succeeded: bool, reason: str | None, now: datetime) -> None:
    user = _user(withdrawal.user_id)
    withdrawal.completed_at = now
    if succeeded:
        ledger.post_hold(withdrawal.hold_id)
        withdrawal.status = SUCCEEDED
        event = "withdrawal_completed"
    else:
        # The day's usage row before the wallet, in the order every payment takes them: the other way round, a
        # payment of the same user at that moment deadlocked with this step and one of the two had to start over.
        limits.release_daily(withdrawal.user_id, withdrawal.amount, withdrawal.created_at)
        ledger.void_hold(withdrawal.hold_id)
        withdrawal.status, withdrawal.failure_reason = FAILED, reason
        event = "withdrawal_failed"
    enqueue(user.phone, event, locale=user.locale, user_id=user.id, amount=format_amount(withdrawal.amount),
            card=mask_card(card.last4), time=format_time(now))


# How long a worker owns a withdrawal while it asks the bank, outside any transaction: other workers leave it alone
# until then. One that takes longer finds, when it comes back, that another worker has claimed the withdrawal again and
# asked the bank by the same reference (which banks answer once), and its own answer is dropped.
_CLAIM = timedelta(minutes=2)

# How long after a claim that submits a payout its request may still reach the bank: the claim, then as long again as
# a call of the bank adapter may take past it (an adapter's timeout must be shorter). Until then the bank's "I have no
# such payout" may be a payout still on its way, and a withdrawal is not failed back on it: an expired claim's payout
# that reached the bank after a poll by the next claim was paid out and given back to the wallet as well.
_IN_FLIGHT = _CLAIM + timedelta(minutes=10)


@dataclass(frozen=True)
class _Claim:
    """What a worker asks the bank about a withdrawal it has claimed (its ``attempt``)."""

    attempt: int
    submit: bool  # submit the payout first (the bank has not accepted it yet), then poll; else only poll
    bank_code: str
    card_token: str
    amount: int


def _advance(withdrawal_id: str) -> None:
    """One step of one withdrawal: claim it, ask the bank (submit it, or poll it), and apply the answer, settling it
    when the bank has decided. The bank is asked between two short transactions, never under the withdrawal's row
    lock: on SQLite a write transaction holds the whole database, so every other payment waited for a slow bank."""
    claim = run_in_transaction(lambda: _claim(withdrawal_id))
    if claim is None:
        return
    bank = gateway()
    answer: BankResult | None = None
    outcome: PayoutStatus | None = None
    error: BankUnavailable | PayoutNotFound | None = None
    try:
        if claim.submit:
            answer = bank.payout(claim.bank_code, claim.card_token, claim.amount, reference=withdrawal_id)
        if answer is None or answer.ok:
            outcome = bank.poll_payout(withdrawal_id)
    except (BankUnavailable, PayoutNotFound) as exc:
        error = exc
    run_in_transaction(lambda: _apply(withdrawal_id, claim.attempt, answer, outcome, error))


def _claim(withdrawal_id: str) -> _Claim | None:
    """Take a due withdrawal for one attempt (counted now, so a worker that dies while asking leaves a trace, and the
    withdrawal is due again once the claim runs out); None when it is not due or was settled here instead."""
    withdrawal = db.session.get(Withdrawal, withdrawal_id, with_for_update=True)
    now = clock.now()
    if withdrawal is None or withdrawal.status not in (PENDING, SUBMITTED) or withdrawal.next_attempt_at > now:
        return None  # settled or claimed by another worker
    card = db.session.get(BankCard, withdrawal.card_id)
    assert card is not None and card.bank_token is not None
    frozen = withdrawal.status == PENDING and freezes.frozen_since(withdrawal.user_id) is not None
    if frozen and withdrawal.attempts == 0:
        # Never claimed, so never sent: the money goes back to the (frozen) wallet, not off the platform.
        _settle(withdrawal, card, False, "account_frozen", now)
        return None
    withdrawal.attempts += 1
    withdrawal.next_attempt_at = now + _CLAIM
    # Past its maximum age a withdrawal the bank may never have received is not submitted any more: the bank is asked
    # whether it has it, and one it never got is failed back (``_retry_or_fail_back``). Nor is one of a frozen account
    # whose earlier attempt got no answer: the bank is asked, and one it never got is failed back at once.
    too_old = now - withdrawal.created_at >= timedelta(seconds=current_app.config["WITHDRAWAL_MAX_AGE_SECONDS"])
    submit = withdrawal.status == PENDING and not too_old and not frozen
    if submit:
        withdrawal.submitted_until = now + _IN_FLIGHT
    return _Claim(withdrawal.attempts, submit, card.bank_code, card.bank_token, withdrawal.amount)


def _apply(withdrawal_id: str, attempt: int, answer: BankResult | None, outcome: PayoutStatus | None,
           error: BankUnavailable | PayoutNotFound | None) -> None:
    """What the bank answered to claim ``attempt``: the payout's acceptance or refusal, its status, or no answer."""
    withdrawal = db.session.get(Withdrawal, withdrawal_id, with_for_update=True)
    if withdrawal is None or withdrawal.status not in (PENDING, SUBMITTED) or withdrawal.attempts != attempt:
        return  # settled meanwhile, or claimed again after this claim ran out: that attempt's answer counts
    card = db.session.get(BankCard, withdrawal.card_id)
    assert card is not None
    now = clock.now()
    if answer is not None:
        withdrawal.bank_reference = answer.bank_reference
        if not answer.ok:
            _settle(withdrawal, card, False, answer.reason, now)
            return
        withdrawal.status = SUBMITTED
    if error is not None:
        _retry_or_fail_back(withdrawal, card, error, now)
    elif outcome in ("succeeded", "failed"):
        _settle(withdrawal, card, outcome == "succeeded", None if outcome == "succeeded" else "payout_failed", now)
    else:
        withdrawal.next_attempt_at = now + _backoff(withdrawal.attempts)


def _retry_or_fail_back(withdrawal: Withdrawal, card: BankCard, error: Exception, now: datetime) -> None:
    withdrawal.last_error = f"{type(error).__name__}: {error}"[:500]
    never_received = isinstance(error, PayoutNotFound) and withdrawal.bank_reference is None
    # Not found yet, but a payout submitted earlier may still arrive (``_IN_FLIGHT``): ask again once it cannot.
    in_flight = withdrawal.submitted_until is not None and now < withdrawal.submitted_until
    frozen = never_received and freezes.frozen_since(withdrawal.user_id) is not None
    if frozen and not in_flight:
        _settle(withdrawal, card, False, "account_frozen", now)  # the bank does not have it: it stays on the platform
        return
    max_age = timedelta(seconds=current_app.config["WITHDRAWAL_MAX_AGE_SECONDS"])
    if now - withdrawal.created_at < max_age and not frozen:
        if isinstance(error, PayoutNotFound):
            withdrawal.status = PENDING  # the bank never got it: submitting again is safe
        withdrawal.next_attempt_at = now + _backoff(withdrawal.attempts)
        return
    if never_received and in_flight:
        assert withdrawal.submitted_until is not None
        withdrawal.next_attempt_at = withdrawal.submitted_until
        return
    if never_received:
        _settle(withdrawal, card, False, "bank_never_answered", now)
        return
    # The bank may have the payout but cannot say, or says it has none after it accepted it (``bank_reference``: its
    # word contradicts its own acceptance): keep asking rather than risk paying twice.
    withdrawal.next_attempt_at = now + timedelta(minutes=10)


def _backoff(attempts: int) -> timedelta:
    base = current_app.config["WITHDRAWAL_RETRY_SECONDS"]
    return timedelta(seconds=random.uniform(base, base * 2 ** min(attempts, 8)))


def _postpone(withdrawal_id: str, error: Exception) -> None:
    """Push a withdrawal that raised to the back of the queue (its own step rolled back), with the error noted."""
    withdrawal = db.session.get(Withdrawal, withdrawal_id, with_for_update=True)
    if withdrawal is None or withdrawal.status not in (PENDING, SUBMITTED):
        return
    withdrawal.last_error = f"{type(error).__name__}: {error}"[:500]
    withdrawal.next_attempt_at = clock.now() + _backoff(withdrawal.attempts + 1)


def process_withdrawals(limit: int = 100) -> int:
    """Worker task: advance every due withdrawal once; returns how many were looked at."""
    now = clock.now()
    due = run_in_transaction(lambda: list(db.session.scalars(
        select(Withdrawal.id).where(Withdrawal.status.in_((PENDING, SUBMITTED)), Withdrawal.next_attempt_at <= now)
        .order_by(Withdrawal.next_attempt_at).limit(limit))))
    for withdrawal_id in due:
        try:
            _advance(withdrawal_id)
        except OperationalError:
            raise  # the database is gone: the worker tries the whole round again
        except Exception as exc:  # one withdrawal that cannot be advanced must not hold up those after it
            log.exception("withdrawal %s could not be advanced; tried again later", withdrawal_id)
            run_in_transaction(lambda withdrawal_id=withdrawal_id, exc=exc: _postpone(withdrawal_id, exc))
    return len(due)


# --- pay a phone number ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    transfer: ledger.PostedTransfer
    payee_phone: str


# The payer and the payee of a payment to a phone number with their wallets in the currency, in one statement on
# the driver's cursor (one row when they are the same). A wallet's ledger account never changes once opened; one
# opened meanwhile reads as None and is opened (found) below.
_PARTIES = sql.Statement(
    "SELECT u.id, u.phone, u.locale, (SELECT w.id FROM ledger_accounts w WHERE w.kind = 'wallet' AND w.owner = u.id"
    " AND w.currency = :currency AND w.shard = 0) AS wallet_id FROM users u"
    " WHERE u.id = :payer_id OR u.phone = :to_phone")


def _refuse_as_for_an_account(payer: Any, amount: int) -> None:
    """Raise what paying ``amount`` to a number that has an account would raise before reaching it (the daily limit,
    then the payer's available money), so that only a payment that would have gone through, and been announced to
    the number's owner, learns that a number has no account. Runs in the payment's transaction, which the error
    rolls back (the limit's count with it)."""
    limits.consume_daily(payer.id, amount)
    available = ledger.balance(payer.wallet_id).available if payer.wallet_id else 0
    if available < amount:
        raise InsufficientFunds("Not enough available money for this movement.", available=max(available, 0))


def pay_phone(payer_id: str, to_phone: str, amount: int, currency: str, note: str | None) -> Payment:
    """Move ``amount`` from the payer's wallet to the wallet of the account with ``to_phone`` (caller's
    transaction); both are told by SMS. Raises ``RecipientNotFound``, ``CannotPaySelf``, ``LimitExceeded``,
    ``PayeeLimitExceeded`` (``LIMIT_PAYMENTS_PER_PAYEE_DAILY``), ``InsufficientFunds``."""
    parties = _PARTIES.all(payer_id=payer_id, to_phone=to_phone, currency=currency)
    payee = next((row for row in parties if row.phone == to_phone), None)
    payer = next(row for row in parties if row.id == payer_id)
    if payee is None:
        _refuse_as_for_an_account(payer, amount)
        raise RecipientNotFound("No account has this phone number.")
    if payee.id == payer_id:
        raise CannotPaySelf("You cannot pay your own phone number.")
    limits.consume_daily(payer_id, amount)
    limits.count_payment_to(payer_id, payee.id)
    posted = ledger.transfer(payer.wallet_id or ledger.open_wallet(payer_id, currency),
                             payee.wallet_id or ledger.open_wallet(payee.id, currency), amount,
                             kind=ledger.PAYMENT, currency=currency, details={"note": note} if note else None)
    text, when = format_amount(amount), format_time(clock.now())
    enqueue(payer.phone, "balance_payment", locale=payer.locale, user_id=payer.id, amount=text,
            payee=mask_phone(payee.phone), time=when)
    enqueue(payee.phone, "transfer_received", locale=payee.locale, user_id=payee.id, amount=text,
            payer=mask_phone(payer.phone), time=when)
    return Payment(posted, payee.phone)
