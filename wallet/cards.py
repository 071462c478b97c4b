"""Bank cards: bind (payment password, verified identity, bank confirms the holder), list, remove.

Binding checks, cheapest and least revealing first: the number's shape (16-19 digits, Luhn) and the bank
code; then the payment password (under its lockout, so a stolen session cannot probe cards); then a verified
identity whose real name equals the holder name; then the bank's own holder check, which links the card and
answers a token for it; only then whether the card is bound to another account (told to its holder's namesake,
never to someone the bank does not know as its holder). The row (with that token, a keyed hash and the last
four digits: never the number) and its SMS alert are written in one transaction; the database's unique index
over active cards decides "already bound".

A removed card keeps its row (money history refers to it) but loses its token. ``get_card_for_user`` is
the only way money services should reach a card: another user's card is a 404, never a 403.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from stdnum import luhn

from core import clock, sql
from core.db import db, run_in_transaction
from core.ids import new_id
from notifications.outbox import enqueue
from notifications.templates import format_time, mask_card
from security import accounts, identity
from security.models import User
from wallet.banks import BANK_CODES, CheckedGateway, bank_name
from wallet.card_errors import (
    CardAlreadyBound,
    CardBoundToAnotherAccount,
    CardHolderMismatch,
    CardInUse,
    CardNotFound,
    IdentityNotVerified,
    InvalidCardNumber,
    UnknownBank,
)
from wallet.card_models import BankCard
from wallet.funds_models import PENDING, SUBMITTED, TopUp, Withdrawal

_SEPARATORS = str.maketrans("", "", "-")


# --- rules (no database, no Flask) -------------------------------------------------------------------


def normalize_card_number(raw: str) -> str:
    """Digits only (spaces of any kind and hyphens, as typed or pasted on a phone, are dropped); 16-19 digits passing
    Luhn. Raises ``InvalidCardNumber`` (whose message never repeats the number)."""
    number = "".join(raw.translate(_SEPARATORS).split())
    if not (number.isascii() and number.isdigit() and 16 <= len(number) <= 19):
        raise InvalidCardNumber("A bank card number has 16 to 19 digits.")
    if not luhn.is_valid(number):
        raise InvalidCardNumber("The card number is not valid; check it for typos.")
    return number


def check_bank_code(code: str) -> str:
    if code not in BANK_CODES:
        raise UnknownBank(f"The bank code must be one of {', '.join(BANK_CODES)}.")
    return code


def masked(card: BankCard) -> str:
    """``**** 1234``: all the API and SMS texts ever show of a card number."""
    return f"**** {card.last4}"


# --- services -----------------------------------------------------------------------------------------


def gateway() -> CheckedGateway:
    """The configured bank adapter (``app.extensions["bank_gateway"]``) behind ``CheckedGateway``: what it raises or
    answers out of turn is ``BankUnavailable``. Every call to a bank goes through here."""
    return CheckedGateway(current_app.extensions["bank_gateway"])


def card_digest(number: str) -> str:
    """The keyed hash that identifies a card number without storing it in the clear."""
    return current_app.extensions["passwords"].keyed_digest("bank-card:" + number)


def _bound_by(digest: str) -> str | None:
    """The account the active card with this digest is bound to, if any."""
    return db.session.scalars(
        select(BankCard.user_id).where(BankCard.card_hash == digest, BankCard.removed_at.is_(None))
    ).first()


def _already_bound(user_id: str, holder: str) -> CardAlreadyBound | CardBoundToAnotherAccount:
    if holder == user_id:
        return CardAlreadyBound("This card is already bound to your account.")
    return CardBoundToAnotherAccount("This card is bound to another account. If it is yours, contact support.")


def bind_card(user: User, card_number: str, holder_name: str, bank_code: str, payment_password: str) -> BankCard:
    """Bind a card to ``user`` and alert them by SMS.

    Raises ``InvalidCardNumber`` / ``UnknownBank`` (422), ``AccountFrozen`` (403), ``WrongPaymentPassword`` (401) /
    ``PaymentPasswordLocked`` (423), ``IdentityNotVerified`` (422), ``CardHolderMismatch`` (422: not the
    verified real name, or the bank disagrees), ``CardAlreadyBound`` / ``CardBoundToAnotherAccount`` (409),
    ``BankUnavailable`` (503).
    """
    user_id = user.id
    number = normalize_card_number(card_number)
    bank = check_bank_code(bank_code)
    accounts.authorize_payment(user_id, payment_password)
    real_name = identity.verified_real_name(user_id)
    if real_name is None:
        raise IdentityNotVerified("Verify your real name (POST /api/v1/me/identity) before binding a card.")
    if not identity.same_name(holder_name, real_name):
        raise CardHolderMismatch("The holder name must be your verified real name.")
    digest = card_digest(number)
    # A card already bound to this account is answered without troubling the bank. That it is bound to another is
    # said only once the bank has confirmed the card is held in the caller's name (a namesake): to anyone else the
    # bank's refusal answers, so binding cannot be used to learn whether a card number has an account here. The
    # unique index still decides races below.
    holder = run_in_transaction(lambda: _bound_by(digest))
    if holder == user_id:
        raise _already_bound(user_id, holder)
    token = gateway().link_card(bank, number, real_name)
    if token is None:
        raise CardHolderMismatch("The bank says this card is not held in your name.")
    if holder is not None:
        raise _already_bound(user_id, holder)

    def work() -> BankCard:
        account = db.session.get(User, user_id)
        assert account is not None
        now = clock.now()
        card = BankCard(id=new_id("card"), user_id=user_id, bank_code=bank, card_hash=digest, last4=number[-4:],
                        bank_token=token, holder_name=real_name, created_at=now)
        db.session.add(card)
        db.session.flush()
        enqueue(account.phone, "card_bound", locale=account.locale, user_id=user_id,
                bank=bank_name(bank, account.locale), card=mask_card(number), time=format_time(now))
        return card

    try:
        return run_in_transaction(work)
    except IntegrityError as exc:
        if not _is_duplicate_card(exc):
            raise
        holder = run_in_transaction(lambda: _bound_by(digest))  # who won the race
        raise _already_bound(user_id, holder or user_id) from exc


def _is_duplicate_card(exc: IntegrityError) -> bool:
    # PostgreSQL names the index; SQLite names its column.
    message = str(exc.orig)
    return "uq_bank_cards_active_card" in message or "bank_cards.card_hash" in message


def list_cards(user_id: str, limit: int, starting_after: str | None) -> tuple[list[BankCard], bool]:
    """A page of the user's active cards, oldest first (ids are time-ordered), after the cursor ``starting_after``,
    and whether more remain."""
    query = select(BankCard).where(BankCard.user_id == user_id, BankCard.removed_at.is_(None))
    if starting_after is not None:
        query = query.where(BankCard.id > starting_after)
    rows = run_in_transaction(lambda: list(db.session.scalars(query.order_by(BankCard.id).limit(limit + 1))))
    return rows[:limit], len(rows) > limit


def _owned_card(user_id: str, card_id: str, *, for_update: bool = False) -> BankCard:
    query = select(BankCard).where(BankCard.id == card_id, BankCard.user_id == user_id, BankCard.removed_at.is_(None))
    card = db.session.scalars(query.with_for_update() if for_update else query).first()
    if card is None:
        raise CardNotFound("No such bank card.")
    return card


def get_card_for_user(user_id: str, card_id: str, *, for_update: bool = False) -> BankCard:
    """The user's active card ``card_id`` (joins the caller's transaction if there is one); ``for_update``
    locks it so it cannot be removed before the caller commits (a payout about to be requested).
    Raises ``CardNotFound`` for a removed card, an unknown id, or another user's card alike."""
    return run_in_transaction(lambda: _owned_card(user_id, card_id, for_update=for_update))


def remove_card(user: User, card_id: str) -> None:
    """Unbind a card: its bank token is erased, the row stays for history; the owner is alerted by SMS.
    Raises ``CardNotFound`` (also for another user's card), ``CardInUse`` while a payout to it or a top-up from
    it is under way (the bank has not settled it yet, and finishing it still needs the token)."""
    user_id = user.id

    def work() -> None:
        card = _owned_card(user_id, card_id, for_update=True)
        payout = db.session.scalar(select(exists().where(
            Withdrawal.card_id == card.id, Withdrawal.status.in_((PENDING, SUBMITTED)))))
        if payout:
            raise CardInUse("A withdrawal to this card is still being paid out; remove it once it has settled.")
        topup = db.session.scalar(select(exists().where(TopUp.card_id == card.id, TopUp.status == PENDING)))
        if topup:
            raise CardInUse("A top-up from this card is still waiting for the bank; remove it once it has settled.")
        account = db.session.get(User, user_id)
        assert account is not None
        now = clock.now()
        card.removed_at, card.bank_token = now, None
        enqueue(account.phone, "card_removed", locale=account.locale, user_id=user_id,
                bank=bank_name(card.bank_code, account.locale), card=masked(card), time=format_time(now))

    run_in_transaction(work)


# R7 as an SQL condition on a user id (``{user}``: a column or a parameter): a verified seller has a verified
# identity and at least one active bound card.
VERIFIED_SELLER_SQL = ("(EXISTS (SELECT 1 FROM identities i WHERE i.user_id = {user})"
                       " AND EXISTS (SELECT 1 FROM bank_cards c WHERE c.user_id = {user} AND c.removed_at IS NULL))")
_IS_VERIFIED_SELLER = sql.Statement("SELECT " + VERIFIED_SELLER_SQL.format(user=":user_id") + " AS verified",
                                    boolean=["verified"])


def is_verified_seller(user_id: str) -> bool:
    return bool(run_in_transaction(lambda: _IS_VERIFIED_SELLER.scalar(user_id=user_id), read_only=True))
