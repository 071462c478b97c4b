"""The double-entry ledger: every movement of money in the product goes through this module.

Model
    A *ledger account* caches four running totals: ``debits_posted``, ``credits_posted``, ``debits_pending``
    and ``credits_pending``. Its balance is ``credits_posted - debits_posted`` and its available balance is
    that less ``debits_pending``. Wallets (one per user and currency) and escrow accounts (one per trade) hold
    someone's money; bank clearing accounts (per bank) and other system accounts mirror money outside the
    platform and carry negative balances. Hot system accounts are split into ``SHARDS`` buckets picked at
    random, so no single row serialises all top-ups or fees.

    A *transfer* moves a positive amount from a debit account to a different credit account of the same
    currency. It is written once and never updated or deleted; a correction is a new transfer. Each transfer
    also writes two *ledger entries*, one per side, with the signed amount and the account's balance after
    it: an account's statement is one index range scan on ``(account_id, id)``.

    A *hold* is a two-phase transfer. Creating it reserves the amount (``debits_pending`` on the debit side,
    ``credits_pending`` on the credit side). Later it is posted (in full or in part: a posted transfer is
    written and the rest returns), voided, or expired by the sweeper after its deadline, exactly once.

Invariants (checked after every step by the tests and on demand by ``flask wallet check``, see ``check.py``)
    1. Per currency the balances of all accounts sum to zero, and pending debits equal pending credits.
    2. Every cached total equals the total recomputed from transfers (posted) and open holds (pending).
    3. No wallet or escrow account is ever below zero available.
    4. Transfers, entries and hold resolutions are never changed; a hold is resolved at most once.
    5. An entry is one side of its transfer (account, counterparty, signed amount, kind) and carries its
       account's posted balance after it.
    Each is enforced twice: here in Python, raising a named ``wallet.errors`` exception *before anything is
    written* (so a caller that catches it inside its own transaction leaves the books as they were), and in
    the database (CHECK constraints, composite foreign keys that pin both accounts to the transfer's
    currency, the primary key of ``hold_resolutions``, triggers refusing UPDATE/DELETE, and one checking each
    new entry against its transfer and its account: migration 0029). Invariant 2 in full, that each transfer
    has exactly its two entries, and that the balances run on from entry to entry are ``check.py``'s.

Transactions and concurrency
    Every function runs in the caller's transaction when there is one and in its own otherwise
    (``core.db.run_in_transaction``), which retries serialization failures and deadlocks, so no client ever
    sees one. Balances are never summed on the hot path: the cached totals *are* the balance.

    PostgreSQL (READ COMMITTED): the touched ledger accounts are locked with ``SELECT ... ORDER BY id FOR NO
    KEY UPDATE``, so every transaction takes account locks in one global order (by id) and two opposite
    transfers between the same wallets queue instead of deadlocking. A plain transfer does the locking, the
    balance check, both updates, the transfer row and both entries in *one* statement (data-modifying CTEs
    that depend on the locking CTE): three round trips including BEGIN and COMMIT, which is what makes it
    fast (see ``bench/ledger.py``). If the check fails the statement writes nothing and returns no row;
    a second, read-only query then names the reason. Holds take the lock on the hold row first (a
    conditional ``UPDATE holds ... WHERE status = 'pending'``), then the accounts in id order.

    SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (``core.db``), so writers are serialised
    and the same steps run as separate statements.

    Entry ids come from a sequence and are taken after the account lock, so per account they grow in the
    order the movements happened and ``balance_after`` is a running sum.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from core import clock, sql
from core.db import db, run_in_transaction
from core.ids import new_id
from core.money import DEFAULT_CURRENCY, MAX_AMOUNT
from wallet.errors import (
    CurrencyMismatch,
    HoldAlreadyResolved,
    HoldAmountExceeded,
    HoldExpired,
    HoldNotFound,
    InsufficientFunds,
    InvalidAmount,
    LedgerAccountNotFound,
    SameLedgerAccount,
)
from wallet.models import (
    BANK_CLEARING,
    ESCROW,
    EXPIRED,
    FEES,
    NON_NEGATIVE_KINDS,
    PENDING,
    POSTED,
    SYSTEM,
    VOIDED,
    WALLET,
    LedgerAccount,
)

# Kinds of transfer (free-form lowercase words; these are the ones the product uses).
TOPUP, WITHDRAWAL, PAYMENT, ESCROW_PAY, ESCROW_RELEASE, REFUND, FEE, ADJUSTMENT = (
    "topup", "withdrawal", "payment", "escrow_pay", "escrow_release", "refund", "fee", "adjustment",
)
# How many buckets each kind of system account is split into.
SHARDS: Mapping[str, int] = {BANK_CLEARING: 8, FEES: 8, SYSTEM: 1}

_KIND = re.compile(r"^[a-z][a-z_]{0,31}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

# Switch for tests and the benchmark: False runs the portable multi-statement path on PostgreSQL too.
single_statement_transfers = True


# --- pure rules ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """The four cached totals of an account, or (with signed values) a change to them."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def balance(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        return self.balance - self.debits_pending

    def plus(self, delta: Totals) -> Totals:
        return Totals(
            self.debits_posted + delta.debits_posted,
            self.credits_posted + delta.credits_posted,
            self.debits_pending + delta.debits_pending,
            self.credits_pending + delta.credits_pending,
        )


def transfer_effect(amount: int) -> tuple[Totals, Totals]:
    """(debit side, credit side) changes of a posted transfer."""
    return Totals(debits_posted=amount), Totals(credits_posted=amount)


def hold_effect(amount: int) -> tuple[Totals, Totals]:
    """Changes of creating a hold: the amount becomes pending on both sides."""
    return Totals(debits_pending=amount), Totals(credits_pending=amount)


def post_effect(held: int, posted: int) -> tuple[Totals, Totals]:
    """Changes of posting ``posted`` of a hold of ``held``: the whole hold leaves pending, ``posted`` is posted."""
    return (
        Totals(debits_posted=posted, debits_pending=-held),
        Totals(credits_posted=posted, credits_pending=-held),
    )


def release_effect(held: int) -> tuple[Totals, Totals]:
    """Changes of voiding or expiring a hold: the amount leaves pending and nothing is posted."""
    return Totals(debits_pending=-held), Totals(credits_pending=-held)


def check_amount(amount: object) -> int:
    """``amount`` as a positive int of minor units; raises ``InvalidAmount`` (floats and bools included)."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidAmount(f"Amounts are integers of minor units, not {type(amount).__name__}.")
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidAmount(f"Amounts are between 1 and {MAX_AMOUNT} minor units.")
    return amount


def check_kind(kind: str) -> str:
    """A transfer kind is a lowercase word (``topup``, ``escrow_release`` ...); anything else is a bug."""
    if not _KIND.match(kind):
        raise ValueError(f"invalid transfer kind {kind!r}")
    return kind


def check_currency(currency: str) -> str:
    if not _CURRENCY.match(currency):
        raise ValueError(f"invalid currency {currency!r}")
    return currency


def check_sides(debit_id: str, credit_id: str) -> None:
    """Raises ``SameLedgerAccount`` when a movement would debit and credit one account."""
    if debit_id == credit_id:
        raise SameLedgerAccount("A movement needs two different ledger accounts.")


def check_currencies(debit_currency: str, credit_currency: str, expected: str | None) -> str:
    """The movement's currency; raises ``CurrencyMismatch`` unless both accounts (and the caller) agree."""
    if debit_currency != credit_currency:
        raise CurrencyMismatch(f"Cannot move {debit_currency} into a {credit_currency} ledger account.")
    if expected is not None and expected != debit_currency:
        raise CurrencyMismatch(f"The ledger accounts hold {debit_currency}, not {expected}.")
    return debit_currency


def check_covers(kind: str, totals: Totals, delta: Totals) -> None:
    """Raises ``InsufficientFunds`` if ``delta`` would leave a wallet or escrow account below zero available."""
    if kind in NON_NEGATIVE_KINDS and totals.plus(delta).available < 0:
        raise InsufficientFunds(
            "Not enough available money for this movement.", available=max(totals.available, 0)
        )


def check_post_amount(held: int, amount: int | None) -> int:
    """How much of a hold of ``held`` to post: all of it by default, else 1..held."""
    if amount is None:
        return held
    check_amount(amount)
    if amount > held:
        raise HoldAmountExceeded(f"The hold reserved {held}; cannot post {amount}.")
    return amount


# --- what the functions return -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    """What an account holds: ``posted`` (credits less debits), ``available`` (posted less money on hold),
    ``pending`` (money on hold going out), ``incoming`` (money on hold coming in)."""

    account_id: str
    currency: str
    posted: int
    available: int
    pending: int
    incoming: int


@dataclass(frozen=True, slots=True)
class PostedTransfer:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    kind: str
    created_at: datetime
    debit_balance_after: int
    credit_balance_after: int
    hold_id: str | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class PendingHold:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    reference: str | None = None


# --- SQL ---------------------------------------------------------------------------------------------------
# Every statement runs on the driver's cursor (``core.sql``): a transfer is on the path of every payment.

_SELECT_ACCOUNTS = (
    "SELECT id, kind, currency, debits_posted, credits_posted, debits_pending, credits_pending"
    " FROM ledger_accounts WHERE id IN (:a, :b) ORDER BY id"
)
_LOCK_ACCOUNTS = sql.Statement({
    "postgresql": _SELECT_ACCOUNTS + " FOR NO KEY UPDATE",
    "sqlite": _SELECT_ACCOUNTS,  # BEGIN IMMEDIATE already holds the database's write lock
})
_READ_ACCOUNTS = sql.Statement(_SELECT_ACCOUNTS)
_READ_ACCOUNT = sql.Statement(
    "SELECT id, kind, currency, debits_posted, credits_posted, debits_pending, credits_pending"
    " FROM ledger_accounts WHERE id = :id"
)
_READ_WALLET = sql.Statement(
    "SELECT id, kind, currency, debits_posted, credits_posted, debits_pending, credits_pending"
    " FROM ledger_accounts WHERE kind = 'wallet' AND owner = :viewer_id AND currency = :currency AND shard = 0"
)
_FIND_ACCOUNT = sql.Statement(
    "SELECT id FROM ledger_accounts WHERE kind = :kind AND owner = :owner AND currency = :currency AND shard = :shard"
)
_CREATE_ACCOUNT = sql.Statement(
    "INSERT INTO ledger_accounts (id, kind, owner, currency, shard, debits_posted, credits_posted, debits_pending,"
    " credits_pending, created_at) VALUES (:id, :kind, :owner, :currency, :shard, 0, 0, 0, 0, :now)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
_APPLY = sql.Statement(
    "UPDATE ledger_accounts SET debits_posted = debits_posted + :debits_posted,"
    " credits_posted = credits_posted + :credits_posted, debits_pending = debits_pending + :debits_pending,"
    " credits_pending = credits_pending + :credits_pending WHERE id = :id RETURNING credits_posted - debits_posted"
)
_INSERT_TRANSFER = sql.Statement(
    "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, hold_id, reference,"
    " details, created_at) VALUES (:id, :debit, :credit, :amount, :currency, :kind, :hold_id, :reference,"
    " :details, :now)"
)
_INSERT_ENTRIES = sql.Statement(
    "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
    " created_at) VALUES (:debit, :id, :credit, :kind, :debit_amount, :debit_after, :now),"
    " (:credit, :id, :debit, :kind, :amount, :credit_after, :now)"
)
_INSERT_HOLD = sql.Statement(
    "INSERT INTO holds (id, debit_account_id, credit_account_id, amount, currency, kind, reference, details,"
    " status, created_at, expires_at) VALUES (:id, :debit, :credit, :amount, :currency, :kind, :reference,"
    " :details, 'pending', :now, :expires_at)"
)
# Claims the hold: the row lock serialises resolvers, and only a pending, unexpired hold of at least
# ``min_amount`` matches, so nothing is written when a check fails.
_CLAIM_HOLD = sql.Statement(
    "UPDATE holds SET status = :status WHERE id = :id AND status = 'pending' AND amount >= :min_amount"
    " AND (expires_at IS NULL OR expires_at > :now)"
    " RETURNING id, debit_account_id, credit_account_id, amount, currency, kind, reference"
)
_CLAIM_EXPIRED_HOLD = sql.Statement(
    "UPDATE holds SET status = 'expired' WHERE id = :id AND status = 'pending' AND expires_at <= :now"
    " RETURNING id, debit_account_id, credit_account_id, amount"
)
_READ_HOLD = sql.Statement("SELECT amount, status, expires_at FROM holds WHERE id = :id", utc=["expires_at"])
_INSERT_RESOLUTION = sql.Statement(
    "INSERT INTO hold_resolutions (hold_id, outcome, posted_amount, transfer_id, resolved_at)"
    " VALUES (:hold_id, :outcome, :posted_amount, :transfer_id, :now)"
)
_DUE_HOLDS = sql.Statement(
    "SELECT id FROM holds WHERE status = 'pending' AND expires_at <= :now ORDER BY expires_at LIMIT :limit"
)

# The whole transfer in one PostgreSQL statement. ``locked`` takes both row locks in id order and sees the
# latest committed totals; ``checked`` has one row only if the movement is allowed; everything after it
# joins ``checked``, so a refused movement writes nothing and returns no row. Rows scanned by ``moved``
# before the locks were granted are re-read at their latest version by PostgreSQL's update recheck.
_TRANSFER_ONE_STATEMENT_SQL = """
WITH locked AS MATERIALIZED (
    SELECT id, kind, currency, credits_posted - debits_posted - debits_pending AS available
    FROM ledger_accounts WHERE id IN (:debit, :credit) ORDER BY id FOR NO KEY UPDATE
), checked AS MATERIALIZED (
    SELECT d.currency FROM locked AS d JOIN locked AS c ON c.id = :credit
    WHERE d.id = :debit AND c.currency = d.currency
      AND (CAST(:currency AS VARCHAR) IS NULL OR d.currency = CAST(:currency AS VARCHAR))
      AND (d.kind NOT IN ('wallet', 'escrow') OR d.available >= CAST(:amount AS BIGINT))
), moved AS (
    UPDATE ledger_accounts AS a
    SET debits_posted = a.debits_posted + CASE WHEN a.id = :debit THEN CAST(:amount AS BIGINT) ELSE 0 END,
        credits_posted = a.credits_posted + CASE WHEN a.id = :credit THEN CAST(:amount AS BIGINT) ELSE 0 END
    FROM checked WHERE a.id IN (:debit, :credit)
    RETURNING a.id, a.credits_posted - a.debits_posted AS balance_after
), transfer AS (
    INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, reference, details,
                           created_at)
    SELECT :id, :debit, :credit, CAST(:amount AS BIGINT), checked.currency, :kind, :reference,
           CAST(:details AS JSON), :now
    FROM checked
    RETURNING id, currency
), entries AS (
    INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,
                                created_at)
    SELECT m.id, t.id, CASE WHEN m.id = :debit THEN :credit ELSE :debit END, :kind,
           CASE WHEN m.id = :debit THEN -CAST(:amount AS BIGINT) ELSE CAST(:amount AS BIGINT) END,
           m.balance_after, :now
    FROM moved AS m CROSS JOIN transfer AS t
    RETURNING account_id, balance_after
)
SELECT e.account_id, e.balance_after, t.currency FROM entries AS e CROSS JOIN transfer AS t
"""
_TRANSFER_ONE_STATEMENT = sql.Statement(_TRANSFER_ONE_STATEMENT_SQL)


def _dialect() -> str:
    return db.session.get_bind().dialect.name


# --- ledger accounts ----------------------------------------------------------------------------------------


def _get_or_create(kind: str, owner: str, currency: str, shard: int, *, likely_new: bool = False) -> str:
    """The account's id, created the first time. ``likely_new``: try the INSERT first (one statement instead of
    two when the account does not exist yet, two instead of one when it does)."""
    check_currency(currency)
    if not owner or len(owner) > 64:
        raise ValueError(f"invalid ledger account owner {owner!r}")
    key = {"kind": kind, "owner": owner, "currency": currency, "shard": shard}

    def run() -> str:
        if not likely_new:
            found = _FIND_ACCOUNT.scalar(key)
            if found is not None:
                return found
        created = _CREATE_ACCOUNT.scalar(key, id=new_id("la"), now=clock.now())
        # Ours, or (None) the row that was there already or a concurrent opener committed first.
        return created if created is not None else _FIND_ACCOUNT.scalar(key)

    return run_in_transaction(run)


def open_wallet(user_id: str, currency: str = DEFAULT_CURRENCY) -> str:
    """The id of ``user_id``'s wallet in ``currency``, creating it (empty) the first time. Idempotent and safe
    to call concurrently."""
    return _get_or_create(WALLET, user_id, currency, 0)


def escrow_account(trade_id: str, currency: str = DEFAULT_CURRENCY) -> str:
    """The escrow account of one trade (created the first time): its money is used only for that trade. A trade
    opened now gets its account with its row (``new_escrow_account``); this finds or makes one for older ones."""
    return _get_or_create(ESCROW, trade_id, currency, 0, likely_new=True)


def new_escrow_account(trade_id: str, currency: str = DEFAULT_CURRENCY) -> str:
    """The escrow account of a trade being opened, written with the transaction that opens it
    (``core.sql.insert_at_commit``: on PostgreSQL it rides along with the trade's own row); its id at once."""
    check_currency(currency)
    account_id = new_id("la")
    sql.insert_at_commit(LedgerAccount.__table__, {
        "id": account_id, "kind": ESCROW, "owner": trade_id, "currency": currency, "shard": 0, "debits_posted": 0,
        "credits_posted": 0, "debits_pending": 0, "credits_pending": 0, "created_at": clock.now()})
    return account_id


def system_account(kind: str, key: str, currency: str = DEFAULT_CURRENCY, shard: int | None = None) -> str:
    """A system account such as ``(BANK_CLEARING, "ICBC")`` or ``(FEES, "platform")``, created the first time.

    Without ``shard`` a random one of the kind's ``SHARDS`` buckets is returned, spreading row locks."""
    if kind not in SHARDS:
        raise ValueError(f"{kind!r} is not a kind of system account")
    if shard is None:
        shard = random.randrange(SHARDS[kind])
    elif not 0 <= shard < SHARDS[kind]:
        raise ValueError(f"{kind} accounts have shards 0..{SHARDS[kind] - 1}")
    return _get_or_create(kind, key, currency, shard)


def balance(account_id: str) -> Balance:
    """The account's committed totals (no lock taken); raises ``LedgerAccountNotFound``."""
    row = run_in_transaction(lambda: _READ_ACCOUNT.one(id=account_id))
    if row is None:
        raise LedgerAccountNotFound()
    return _balance(row)


def wallet_balance(viewer: sql.Viewer, currency: str = DEFAULT_CURRENCY) -> Balance:
    """The committed totals of the viewer's wallet (``sql.Viewing(user_id)``, or the request's caller), found by its
    owner in one statement; raises ``LedgerAccountNotFound``."""
    rows = run_in_transaction(lambda: viewer.read(_READ_WALLET, {"currency": currency}))
    if not rows:
        raise LedgerAccountNotFound(f"No {currency} wallet for this user.")
    return _balance(rows[0])


def _json(details: dict[str, Any] | None) -> str | None:
    return None if details is None else json.dumps(details)


def _balance(row: Any) -> Balance:
    totals = _totals(row)
    return Balance(row.id, row.currency, totals.balance, totals.available, totals.debits_pending,
                   totals.credits_pending)


def _totals(row: Any) -> Totals:
    return Totals(row.debits_posted, row.credits_posted, row.debits_pending, row.credits_pending)


# --- the engine: lock, check, apply -------------------------------------------------------------------------


def lock_accounts(first: str, second: str) -> None:
    """Lock two accounts in id order in the caller's transaction (its own when there is none), ahead of a step that
    moves money to each in turn: each transfer locks its own pair in id order, but two transfers of one transaction
    take the two accounts in the step's order, and a transfer between the two running meanwhile takes them in id
    order, so the two could wait on each other until PostgreSQL broke the cycle (after ``deadlock_timeout``) and the
    step ran again. Raises ``LedgerAccountNotFound``."""
    run_in_transaction(lambda: _lock_pair(first, second))


def _lock_pair(debit_id: str, credit_id: str) -> tuple[Any, Any]:
    """Both account rows, locked in id order on PostgreSQL; raises ``LedgerAccountNotFound``."""
    rows = {row.id: row for row in _LOCK_ACCOUNTS.all(a=debit_id, b=credit_id)}
    if debit_id not in rows or credit_id not in rows:
        raise LedgerAccountNotFound("A ledger account of this movement does not exist.")
    return rows[debit_id], rows[credit_id]


def _apply(changes: Sequence[tuple[str, Totals]]) -> dict[str, int]:
    """Adds each change to its account (in id order) and returns each account's posted balance after."""
    return {
        account_id: _APPLY.scalar(asdict(delta), id=account_id)
        for account_id, delta in sorted(changes)
    }


def _write_transfer(t: PostedTransfer, details: dict[str, Any] | None) -> None:
    params = {"id": t.id, "debit": t.debit_account_id, "credit": t.credit_account_id, "amount": t.amount,
              "currency": t.currency, "kind": t.kind, "hold_id": t.hold_id, "reference": t.reference,
              "details": _json(details), "now": t.created_at}
    _INSERT_TRANSFER.run(params)
    _INSERT_ENTRIES.run(
        {**params, "debit_amount": -t.amount, "debit_after": t.debit_balance_after,
         "credit_after": t.credit_balance_after},
    )


def _account_id(account: str | LedgerAccount) -> str:
    return account if isinstance(account, str) else account.id


# --- movements ----------------------------------------------------------------------------------------------


def transfer(
    debit: str | LedgerAccount,
    credit: str | LedgerAccount,
    amount: int,
    *,
    kind: str,
    currency: str | None = None,
    reference: str | None = None,
    details: dict[str, Any] | None = None,
) -> PostedTransfer:
    """Move ``amount`` from ``debit`` to ``credit`` now, in the caller's transaction (or its own).

    Raises ``InvalidAmount``, ``SameLedgerAccount``, ``LedgerAccountNotFound``, ``CurrencyMismatch`` (also when
    ``currency`` is given and differs) and ``InsufficientFunds`` (the debit is a wallet or escrow account with
    less available than ``amount``); nothing is written when it raises."""
    debit_id, credit_id = _account_id(debit), _account_id(credit)
    check_amount(amount)
    check_kind(kind)
    check_sides(debit_id, credit_id)
    transfer_id, now = new_id("tf"), clock.now()

    def portable() -> PostedTransfer:
        debit_row, credit_row = _lock_pair(debit_id, credit_id)
        movement_currency = check_currencies(debit_row.currency, credit_row.currency, currency)
        debit_delta, credit_delta = transfer_effect(amount)
        check_covers(debit_row.kind, _totals(debit_row), debit_delta)
        after = _apply([(debit_id, debit_delta), (credit_id, credit_delta)])
        posted = PostedTransfer(transfer_id, debit_id, credit_id, amount, movement_currency, kind, now,
                                after[debit_id], after[credit_id], reference=reference)
        _write_transfer(posted, details)
        return posted

    def one_statement() -> PostedTransfer:
        rows = _TRANSFER_ONE_STATEMENT.all(
            id=transfer_id, debit=debit_id, credit=credit_id, amount=amount, currency=currency, kind=kind,
            reference=reference, details=_json(details), now=now)
        if len(rows) != 2:
            _explain_refusal(debit_id, credit_id, currency)
        after = {row.account_id: row.balance_after for row in rows}
        return PostedTransfer(transfer_id, debit_id, credit_id, amount, rows[0].currency, kind, now,
                              after[debit_id], after[credit_id], reference=reference)

    def run() -> PostedTransfer:
        if single_statement_transfers and _dialect() == "postgresql":
            return one_statement()
        return portable()

    return run_in_transaction(run)


def _explain_refusal(debit_id: str, credit_id: str, currency: str | None) -> None:
    """Raises the named error for a transfer the one-statement path refused (it wrote nothing)."""
    rows = {row.id: row for row in _READ_ACCOUNTS.all(a=debit_id, b=credit_id)}
    if debit_id not in rows or credit_id not in rows:
        raise LedgerAccountNotFound("A ledger account of this movement does not exist.")
    check_currencies(rows[debit_id].currency, rows[credit_id].currency, currency)
    # The statement saw too little available under the lock; say so even if money has arrived since.
    raise InsufficientFunds(
        "Not enough available money for this movement.", available=max(_totals(rows[debit_id]).available, 0)
    )


def create_hold(
    debit: str | LedgerAccount,
    credit: str | LedgerAccount,
    amount: int,
    *,
    kind: str,
    currency: str | None = None,
    expires_at: datetime | None = None,
    reference: str | None = None,
    details: dict[str, Any] | None = None,
) -> PendingHold:
    """Reserve ``amount`` on ``debit`` for ``credit`` until the hold is posted, voided or (after
    ``expires_at``) expired. Raises what ``transfer`` raises; the reserved money is no longer available."""
    debit_id, credit_id = _account_id(debit), _account_id(credit)
    check_amount(amount)
    check_kind(kind)
    check_sides(debit_id, credit_id)
    hold_id, now = new_id("hold"), clock.now()

    def run() -> PendingHold:
        debit_row, credit_row = _lock_pair(debit_id, credit_id)
        hold_currency = check_currencies(debit_row.currency, credit_row.currency, currency)
        debit_delta, credit_delta = hold_effect(amount)
        check_covers(debit_row.kind, _totals(debit_row), debit_delta)
        _apply([(debit_id, debit_delta), (credit_id, credit_delta)])
        _INSERT_HOLD.run(id=hold_id, debit=debit_id, credit=credit_id, amount=amount, currency=hold_currency,
                         kind=kind, reference=reference, details=_json(details), now=now, expires_at=expires_at)
        return PendingHold(hold_id, debit_id, credit_id, amount, hold_currency, kind, now, expires_at, reference)

    return run_in_transaction(run)


def _hold_id(hold: str | PendingHold) -> str:
    return hold if isinstance(hold, str) else hold.id


def _claim(hold_id: str, outcome: str, min_amount: int, now: datetime) -> Any:
    """Marks a pending hold resolved and returns it; raises (having written nothing) if it cannot be."""
    row = _CLAIM_HOLD.one(id=hold_id, status=outcome, min_amount=min_amount, now=now)
    if row is not None:
        return row
    current = _READ_HOLD.one(id=hold_id)
    if current is None:
        raise HoldNotFound()
    if current.status != PENDING:
        raise HoldAlreadyResolved(current.status)
    if current.expires_at is not None and current.expires_at <= now:
        raise HoldExpired("The hold's deadline has passed.")
    raise HoldAmountExceeded(f"The hold reserved {current.amount}; cannot post {min_amount}.")


def post_hold(hold: str | PendingHold, amount: int | None = None) -> PostedTransfer:
    """Post ``amount`` of the hold (all of it by default) as a transfer; any remainder returns to the debit
    account. Raises ``HoldNotFound``, ``HoldAlreadyResolved``, ``HoldExpired``, ``HoldAmountExceeded``,
    ``InvalidAmount``."""
    hold_id = _hold_id(hold)
    if amount is not None:
        check_amount(amount)
    transfer_id, now = new_id("tf"), clock.now()

    def run() -> PostedTransfer:
        row = _claim(hold_id, POSTED, amount or 1, now)
        posted_amount = check_post_amount(row.amount, amount)
        debit_delta, credit_delta = post_effect(row.amount, posted_amount)
        _lock_pair(row.debit_account_id, row.credit_account_id)
        after = _apply([(row.debit_account_id, debit_delta), (row.credit_account_id, credit_delta)])
        posted = PostedTransfer(transfer_id, row.debit_account_id, row.credit_account_id, posted_amount,
                                row.currency, row.kind, now, after[row.debit_account_id],
                                after[row.credit_account_id], hold_id=hold_id, reference=row.reference)
        _write_transfer(posted, None)
        _INSERT_RESOLUTION.run(hold_id=hold_id, outcome=POSTED, posted_amount=posted_amount, transfer_id=transfer_id,
                               now=now)
        return posted

    return run_in_transaction(run)


def _release(row: Any, outcome: str, now: datetime) -> None:
    debit_delta, credit_delta = release_effect(row.amount)
    _lock_pair(row.debit_account_id, row.credit_account_id)
    _apply([(row.debit_account_id, debit_delta), (row.credit_account_id, credit_delta)])
    _INSERT_RESOLUTION.run(hold_id=row.id, outcome=outcome, posted_amount=0, transfer_id=None, now=now)


def void_hold(hold: str | PendingHold) -> None:
    """Cancel the hold: the whole amount returns to the debit account. Raises ``HoldNotFound``,
    ``HoldAlreadyResolved``, ``HoldExpired``."""
    hold_id, now = _hold_id(hold), clock.now()
    run_in_transaction(lambda: _release(_claim(hold_id, VOIDED, 1, now), VOIDED, now))


def expire_holds(now: datetime | None = None, limit: int = 500) -> int:
    """Expire up to ``limit`` pending holds whose deadline is at or before ``now``; returns how many.

    Each hold is expired in its own transaction when called outside one. Safe to run in several processes:
    a hold another sweeper (or a concurrent post or void) resolved first is skipped."""
    moment = now or clock.now()
    due = run_in_transaction(
        lambda: [row.id for row in _DUE_HOLDS.all(now=moment, limit=limit)]
    )

    def expire(hold_id: str) -> bool:
        row = _CLAIM_EXPIRED_HOLD.one(id=hold_id, now=moment)
        if row is None:
            return False
        _release(row, EXPIRED, moment)
        return True

    return sum(run_in_transaction(lambda hold_id=hold_id: expire(hold_id)) for hold_id in due)
