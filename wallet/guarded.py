"""The gate every money-moving POST goes through, in this order:

1. the ``Idempotency-Key`` header must be there (checked first, so a missing key costs no password try), except
   on the steps that take it optionally (``key_required=False``: a refund step, which its state alone already
   keeps from happening twice; with a key its retry replays the first answer instead of a 409);
2. the payment password (``security.accounts.authorize_payment``: its own lockout, 401/423);
3. the effect, inside ``core.idempotency.run_idempotent`` with a fingerprint of the request that leaves the
   payment password out (it is never stored, not even hashed). It runs in the transaction that records the
   password check, unless a ``prepare`` step (a card top-up that must stand on its own) comes in between. A
   ``prepare`` step runs only for a key with no stored answer: a replay answers without it, and a key first used
   by another request is refused before it (422 ``idempotency_key_reused``, not a card charged). It is given
   the key and the request's fingerprint, to name what it does after both.

A retry of a request that has its answer is answered with it even when the account has been frozen or its payment
password locked since (403/423 only for a request that has none): it moves nothing, and the client learns what
happened instead of reading a refusal as "not paid".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, request
from pydantic import BaseModel

from core.api import respond_json
from core.errors import AppError
from core.idempotency import check_key, fingerprint, run_idempotent, stored_answer
from security.accounts import authorize_payment
from security.errors import AccountFrozen, PaymentPasswordLocked, WrongPaymentPassword


def guarded(user_id: str, body: BaseModel, effect: Callable[[], tuple[int, dict[str, Any]]],
            prepare: Callable[[str, str], object] | None = None, *, key_required: bool = True,
            from_caller: bool = True) -> Response:
    """Run ``effect`` for the caller ``user_id`` behind the key, the password and the idempotency store.
    ``prepare(key, request_hash)`` runs after the password check and before the effect, in its own transactions
    (a top-up that must not roll back), unless the key already has an answer. ``from_caller`` is False for a
    step whose money leaves escrow for the other party and never the caller's own accounts (a seller agreeing to
    a refund): a freeze of the caller's account does not stop it, the payment password still guards it."""
    header = request.headers.get("Idempotency-Key")
    if header is None and not key_required:
        outcome = authorize_payment(user_id, body.payment_password, effect,  # type: ignore[attr-defined]
                                    moves_money=from_caller)
        assert outcome is not None
        return respond_json(outcome[1], outcome[0])
    key = check_key(header)
    request_hash = fingerprint(request.method, request.path, body.model_dump(mode="json", exclude={"payment_password"}))
    password = body.payment_password  # type: ignore[attr-defined]
    try:
        if prepare is None:  # the effect commits with the password check: one transaction
            outcome = authorize_payment(user_id, password, lambda: run_idempotent(user_id, key, request_hash, effect),
                                        moves_money=from_caller)
            assert outcome is not None
            status, answer, replayed = outcome
        else:
            authorize_payment(user_id, password, moves_money=from_caller)
            stored = stored_answer(user_id, key, request_hash)
            if stored is None:
                prepare(key, request_hash)
                status, answer, replayed = run_idempotent(user_id, key, request_hash, effect)
            else:
                (status, answer), replayed = stored, True
    except (AccountFrozen, PaymentPasswordLocked) as refused:
        # The retry of a request that went through before the account was frozen, or its payment password locked,
        # answers what happened (it moves nothing): a client that lost the first answer must not read a refusal as
        # "not paid". A request the key has no answer for is refused, and so is the wrong entry that locks the
        # password (before the lock a replay's password is checked: that entry is told it locked, not answered 201).
        if getattr(refused, "by_this_entry", False):
            raise
        stored = stored_answer(user_id, key, request_hash)
        if stored is None:
            raise
        (status, answer), replayed = stored, True
    response = respond_json(answer, status)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


#: What the payment-password gate of ``guarded`` answers: a wrong password (401) and a locked one (423), and for a
#: step that moves the caller's own money (``from_caller``) a frozen account (403), for ``core.api.endpoint(errors=)``.
PASSWORD_REFUSALS: tuple[type[AppError], ...] = (WrongPaymentPassword, PaymentPasswordLocked)
FROM_CALLER_REFUSALS: tuple[type[AppError], ...] = (*PASSWORD_REFUSALS, AccountFrozen)
