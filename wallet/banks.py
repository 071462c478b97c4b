"""The bank gateway (R11): one interface in front of every partner bank, and the sandbox bank behind it.

``BankGateway`` is what the card and money services call; the application holds one in
``app.extensions["bank_gateway"]``. Binding a card links it at the bank (``link_card``, the quick-pay
agreement of Chinese banks): the bank checks the holder and answers with a token for the card, which is all
we keep and all that debits and payouts name, so no full card number is stored on our side.

Every money operation carries a ``reference`` chosen by us, and a bank treats the same reference as the same
operation: asking twice (a retry after a timeout) never debits or pays twice, it returns the first answer.
A timeout raises ``BankUnavailable`` and leaves the outcome unknown until the same reference is retried or
polled; that is the only safe reading of a timeout.

Payouts are asynchronous: ``payout`` answers ``accepted`` (or ``failed`` when the bank refuses at once) and
``poll_payout`` later says ``pending``, ``succeeded`` or ``failed``.

The money services never call an adapter directly but through ``CheckedGateway`` (``wallet.cards.gateway()``), which
makes a misbehaving adapter safe: anything it raises besides ``BankUnavailable`` and ``PayoutNotFound`` (a bug, a
dropped connection, its HTTP client's timeout), and any answer that is not one the interface allows or that names
another reference, amount or currency than was asked (``BankResult.reference`` / ``amount`` / ``currency``, which an
adapter fills from the bank's answer), is logged in one line and raised as ``BankUnavailable``: the outcome is
unknown, and the same reference is asked again later, so nothing is credited, paid or given back on its word.

``SimulatedBank`` implements DESIGN 7.2 for the banks ICBC, ABC, CCB, CMB and SPDB. It holds every
Luhn-valid card of 16-19 digits in the name given when it was first confirmed; a card ending in ``0000``
has another holder (any name is a mismatch), ``9999`` has no money (debits fail with
``insufficient_funds_at_bank``), ``8888`` fails payouts after accepting them. Latency and timeouts are
injectable and deterministic under a seed. It keeps its state in memory, a sandbox for one process, except
its card tokens: ``sim-<bank>-<24 random hex>-<last 4 digits>`` carries what the sandbox rules need, so any
process's simulated bank honours a token another issued (the web process links, a worker pays out).
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from stdnum import luhn

from security.identity import name_key
from wallet.card_errors import BankUnavailable

__all__ = [
    "BANK_CODES",
    "BANK_NAMES",
    "BankGateway",
    "BankResult",
    "BankUnavailable",
    "CheckedGateway",
    "PayoutNotFound",
    "PayoutStatus",
    "ReferenceConflict",
    "SimulatedBank",
    "bank_name",
]

BANK_CODES = ("ICBC", "ABC", "CCB", "CMB", "SPDB")
BANK_NAMES = {
    "ICBC": ("中国工商银行", "ICBC"),
    "ABC": ("中国农业银行", "Agricultural Bank of China"),
    "CCB": ("中国建设银行", "China Construction Bank"),
    "CMB": ("招商银行", "China Merchants Bank"),
    "SPDB": ("浦发银行", "SPD Bank"),
}

log = logging.getLogger(__name__)
T = TypeVar("T")
ResultStatus = Literal["succeeded", "failed", "accepted"]
PayoutStatus = Literal["pending", "succeeded", "failed"]

# Failure reasons a bank may give in ``BankResult.reason``.
CARD_NOT_FOUND = "card_not_found"
INSUFFICIENT_FUNDS_AT_BANK = "insufficient_funds_at_bank"
PAYOUT_REJECTED = "payout_rejected"


def bank_name(bank_code: str, locale: str) -> str:
    """The bank's name for an SMS in ``locale`` (the code itself for an unknown bank)."""
    zh, en = BANK_NAMES.get(bank_code, (bank_code, bank_code))
    return en if locale == "en" else zh


@dataclass(frozen=True)
class BankResult:
    """The bank's answer to ``debit`` or ``payout``. ``reason`` is set when ``status`` is ``failed``.

    ``reference``, ``amount`` and ``currency`` are what the bank's answer says it is about (our reference, the fen
    and the currency it debited or will pay), when the bank says so (None: it does not); ``CheckedGateway`` refuses
    an answer that names anything else than was asked."""

    status: ResultStatus
    bank_reference: str
    reason: str | None = None
    reference: str | None = None
    amount: int | None = None
    currency: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class PayoutNotFound(LookupError):
    """``poll_payout`` was asked about a reference the bank never received (the payout request itself was
    lost): sending ``payout`` again with the same reference is safe."""


class ReferenceConflict(ValueError):
    """A reference was reused for a different operation (other kind, card or amount): a bug on our side."""


class BankGateway(Protocol):
    """One partner-bank connection. Amounts are positive integers in fen (CNY).

    Every method may raise ``BankUnavailable`` (timeout: outcome unknown, retry with the same reference); through
    ``CheckedGateway`` that is the only thing it raises, besides ``PayoutNotFound`` from ``poll_payout``.
    """

    def link_card(self, bank_code: str, card_number: str, holder_name: str) -> str | None:
        """The bank's token for ``card_number`` when it holds the card in the name ``holder_name``, else None."""
        ...

    def debit(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        """Take ``amount`` from the linked card (a top-up): ``succeeded`` or ``failed`` with a reason."""
        ...

    def payout(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        """Ask the bank to pay ``amount`` to the linked card (a withdrawal): ``accepted`` or ``failed``."""
        ...

    def poll_payout(self, reference: str) -> PayoutStatus:
        """Where an accepted payout stands. Raises ``PayoutNotFound`` for a reference never received."""
        ...


CURRENCY = "CNY"  # what every amount the gateway names is in
_RESULT_STATUSES = frozenset(("succeeded", "failed", "accepted"))
_PAYOUT_STATUSES = frozenset(("pending", "succeeded", "failed"))


class CheckedGateway:
    """The configured adapter as the money services see it: a raise it did not foresee, or an answer the interface
    does not allow or that is about another operation, becomes ``BankUnavailable`` (outcome unknown, asked again by
    reference), logged in one line (the error's type, never its text: an adapter's message may repeat a card
    number)."""

    def __init__(self, adapter: BankGateway) -> None:
        self.adapter = adapter

    def link_card(self, bank_code: str, card_number: str, holder_name: str) -> str | None:
        token = self._ask(f"link_card at {bank_code}", None,
                          lambda: self.adapter.link_card(bank_code, card_number, holder_name))
        if token is not None and not (isinstance(token, str) and token):
            raise self._refuse(f"link_card at {bank_code}", None, "a card token that is not a non-empty string")
        return token

    def debit(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        result = self._ask(f"debit at {bank_code}", reference,
                           lambda: self.adapter.debit(bank_code, card_token, amount, reference))
        return self._checked(f"debit at {bank_code}", reference, amount, result)

    def payout(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        result = self._ask(f"payout at {bank_code}", reference,
                           lambda: self.adapter.payout(bank_code, card_token, amount, reference))
        return self._checked(f"payout at {bank_code}", reference, amount, result)

    def poll_payout(self, reference: str) -> PayoutStatus:
        status = self._ask("poll_payout", reference, lambda: self.adapter.poll_payout(reference))
        if status not in _PAYOUT_STATUSES:
            raise self._refuse("poll_payout", reference, "a payout status the interface does not have")
        return status

    @staticmethod
    def _ask(operation: str, reference: str | None, call: Callable[[], T]) -> T:
        try:
            return call()
        except (BankUnavailable, PayoutNotFound):
            raise
        except Exception as exc:  # whatever the adapter raises, the bank's answer is unknown: the one safe reading
            log.warning("bank %s for %s raised %s; taken as no answer, asked again later", operation,
                        reference or "a card", type(exc).__name__)
            raise BankUnavailable(f"The bank adapter raised {type(exc).__name__}.") from exc

    @staticmethod
    def _refuse(operation: str, reference: str | None, what: str) -> BankUnavailable:
        log.error("bank %s for %s answered %s; taken as no answer, asked again later", operation,
                  reference or "a card", what)
        return BankUnavailable(f"The bank answered {what}.")

    def _checked(self, operation: str, reference: str, amount: int, result: object) -> BankResult:
        if not isinstance(result, BankResult) or result.status not in _RESULT_STATUSES:
            raise self._refuse(operation, reference, "something that is not a result")
        for name, asked in (("reference", reference), ("amount", amount), ("currency", CURRENCY)):
            said = getattr(result, name)
            if said is not None and said != asked:
                raise self._refuse(operation, reference, f"about another {name} ({said!r})")
        return result


@dataclass
class _Operation:
    kind: Literal["debit", "payout"]
    bank_code: str
    card_token: str
    amount: int
    result: BankResult
    outcome: PayoutStatus  # the final state of a payout; for a debit, its result
    polls: int = 0


_TOKEN = re.compile(r"sim-(?P<bank>[A-Z]+)-[0-9a-f]{24}-(?P<last4>[0-9]{4})")




class SimulatedBank:
    """The sandbox bank of DESIGN 7.2 (thread-safe, in memory).

    ``latency``: seconds every call takes. ``failure_rate``: probability that a call times out; a timeout
    strikes before or after the bank acted (a coin flip), so callers must retry by reference.
    ``timeout_references``: references whose calls always time out without effect (a bank that never
    answers; remove a reference from the public set to let it through). ``payout_pending_polls``: how
    many polls an accepted payout answers ``pending`` before its outcome. ``seed`` makes the injected
    failures repeatable; ``sleep`` is replaceable so tests need not wait.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        timeout_references: Iterable[str] = (),
        payout_pending_polls: int = 0,
        seed: int | None = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if latency < 0 or not 0.0 <= failure_rate <= 1.0 or payout_pending_polls < 0:
            raise ValueError("latency >= 0, 0 <= failure_rate <= 1 and payout_pending_polls >= 0 are required")
        self.latency = latency
        self.failure_rate = failure_rate
        self.timeout_references: set[str] = set(timeout_references)
        self.payout_pending_polls = payout_pending_polls
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._holders: dict[str, str] = {}
        self._operations: dict[str, _Operation] = {}
        self._sequence = itertools.count(1)

    # --- the gateway -----------------------------------------------------------------------------------

    def link_card(self, bank_code: str, card_number: str, holder_name: str) -> str | None:
        return self._call(None, lambda: self._link(bank_code, card_number, holder_name))

    def debit(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        _check_amount(amount, reference)
        return self._call(reference, lambda: self._record("debit", bank_code, card_token, amount, reference).result)

    def payout(self, bank_code: str, card_token: str, amount: int, reference: str) -> BankResult:
        _check_amount(amount, reference)
        return self._call(reference, lambda: self._record("payout", bank_code, card_token, amount, reference).result)

    def poll_payout(self, reference: str) -> PayoutStatus:
        return self._call(reference, lambda: self._poll(reference))

    # --- for tests and the sandbox ---------------------------------------------------------------------

    def operation_count(self) -> int:
        with self._lock:
            return len(self._operations)

    def total_debited(self, card_token: str) -> int:
        """Fen successfully taken from the linked card (each reference counted once)."""
        with self._lock:
            return sum(op.amount for op in self._operations.values()
                       if op.kind == "debit" and op.card_token == card_token and op.outcome == "succeeded")

    def total_paid_out(self, card_token: str) -> int:
        """Fen of payouts to the linked card that the bank has accepted and that will succeed or have succeeded."""
        with self._lock:
            return sum(op.amount for op in self._operations.values()
                       if op.kind == "payout" and op.card_token == card_token and op.outcome == "succeeded")

    # --- inside the bank --------------------------------------------------------------------------------

    def _call(self, reference: str | None, act: Callable[[], T]) -> T:
        if self.latency:
            self._sleep(self.latency)
        with self._lock:
            if reference is not None and reference in self.timeout_references:
                raise BankUnavailable("The bank did not answer in time.")
            if self.failure_rate and self._rng.random() < self.failure_rate:
                if self._rng.random() < 0.5:
                    act()  # the bank acted, but its answer is lost on the way back
                raise BankUnavailable("The bank did not answer in time.")
            return act()

    def _holds(self, bank_code: str, card_number: str) -> bool:
        return (
            bank_code in BANK_CODES
            and 16 <= len(card_number) <= 19
            and card_number.isascii()
            and card_number.isdigit()
            and luhn.is_valid(card_number)
        )

    def _link(self, bank_code: str, card_number: str, holder_name: str) -> str | None:
        key = name_key(holder_name)
        if not key or not self._holds(bank_code, card_number) or card_number.endswith("0000"):
            return None
        if self._holders.setdefault(card_number, key) != key:
            return None
        return f"sim-{bank_code}-{secrets.token_hex(12)}-{card_number[-4:]}"

    def _record(
        self, kind: Literal["debit", "payout"], bank_code: str, card_token: str, amount: int, reference: str
    ) -> _Operation:
        known = self._operations.get(reference)
        if known is not None:
            if (known.kind, known.bank_code, known.card_token, known.amount) != (kind, bank_code, card_token, amount):
                raise ReferenceConflict(f"reference {reference!r} was already used for another operation")
            return known
        bank_reference = f"SIM-{bank_code}-{next(self._sequence):010d}"
        token = _TOKEN.fullmatch(card_token)
        about = {"reference": reference, "amount": amount, "currency": CURRENCY}
        if token is None or token["bank"] != bank_code:  # never issued, or issued by another bank
            result, outcome = BankResult("failed", bank_reference, CARD_NOT_FOUND, **about), "failed"
        elif kind == "debit" and token["last4"] == "9999":
            result, outcome = BankResult("failed", bank_reference, INSUFFICIENT_FUNDS_AT_BANK, **about), "failed"
        elif kind == "debit":
            result, outcome = BankResult("succeeded", bank_reference, **about), "succeeded"
        else:
            outcome = "failed" if token["last4"] == "8888" else "succeeded"
            result = BankResult("accepted", bank_reference, **about)
        operation = _Operation(kind, bank_code, card_token, amount, result, outcome)
        self._operations[reference] = operation
        return operation

    def _poll(self, reference: str) -> PayoutStatus:
        operation = self._operations.get(reference)
        if operation is None or operation.kind != "payout":
            raise PayoutNotFound(reference)
        if operation.result.status == "accepted" and operation.polls < self.payout_pending_polls:
            operation.polls += 1
            return "pending"
        return operation.outcome


def _check_amount(amount: int, reference: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError("amount must be a positive integer number of fen")
    if not reference or not isinstance(reference, str):
        raise ValueError("a reference is required")
