"""HTTP endpoints of money movement: balance, statement, top-up, withdrawal, paying a phone number."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, stream_with_context

from core.api import endpoint, parse_body, parse_query, respond, respond_built
from core.sql import Viewing
from security.auth import CALLER, current_caller, require_token
from security.phones import normalize_phone
from wallet import funds, ledger, statement
from wallet.card_errors import BankUnavailable, CardNotFound
from wallet.errors import InsufficientFunds, LedgerAccountNotFound
from wallet.funds import BankDeclined, CannotPaySelf, IdentityNotVerified, RecipientNotFound
from wallet.funds_models import TopUp, Withdrawal
from wallet.guarded import FROM_CALLER_REFUSALS, guarded
from wallet.limits import LimitExceeded, PayeeLimitExceeded
from wallet.schemas import (
    Statement,
    StatementQuery,
    TopUpOut,
    TopUpRequest,
    TransferOut,
    TransferRequest,
    WalletOut,
    WithdrawalOut,
    WithdrawalRequest,
)

bp = Blueprint("wallet", __name__, url_prefix="/api/v1")


def _topup_out(topup: TopUp) -> TopUpOut:
    return TopUpOut(id=topup.id, status=topup.status, amount=topup.amount, currency=topup.currency,  # type: ignore[arg-type]
                    bank_card_id=topup.card_id, created_at=topup.created_at, completed_at=topup.completed_at)


def _withdrawal_out(withdrawal: Withdrawal) -> WithdrawalOut:
    return WithdrawalOut(id=withdrawal.id, status=withdrawal.status, amount=withdrawal.amount,  # type: ignore[arg-type]
                         currency=withdrawal.currency, bank_card_id=withdrawal.card_id,
                         failure_reason=withdrawal.failure_reason, created_at=withdrawal.created_at,
                         completed_at=withdrawal.completed_at)


@endpoint(bp, "/wallet", "GET", summary="My balance", response=WalletOut)
def get_wallet() -> Response:
    try:
        balance = ledger.wallet_balance(CALLER)
    except LedgerAccountNotFound:
        return respond(WalletOut(available=0, pending=0, currency="CNY"))
    return respond(WalletOut(available=balance.available, pending=balance.pending, currency=balance.currency))


@endpoint(bp, "/wallet/transactions", "GET", summary="My statement (add format=csv for a CSV download)",
          query=StatementQuery, response=Statement, response_media_types=("application/json", "text/csv"))
def get_statement() -> Response:
    require_token()
    query = parse_query(StatementQuery)
    filters = {"kind": query.kind, "from_date": query.from_date, "to_date": query.to_date}
    if query.format == "csv":
        user = current_caller()
        return Response(stream_with_context(statement.csv_rows(Viewing(user.id), **filters)), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="statement.csv"'})
    before = int(query.starting_after) if query.starting_after else None
    page, more = statement.lines(CALLER, limit=query.limit, before_id=before, **filters)
    return respond_built({"data": page, "has_more": more, "next_starting_after": page[-1]["id"] if more and page
                          else None})


@endpoint(bp, "/topups", "POST", summary="Top up from a bound card", body=TopUpRequest, response=TopUpOut,
          status=201, idempotent=True,
          errors=(*FROM_CALLER_REFUSALS, CardNotFound, LimitExceeded, BankDeclined, BankUnavailable))
def create_topup() -> Response:
    user = current_caller()
    req = parse_body(TopUpRequest)
    response = guarded(user.id, req, lambda: (201, {"id": funds.create_topup(
        user.id, req.bank_card_id, req.amount, req.currency).id}))
    # The bank step runs after the key is committed; a replay finishes it (or reports how it ended).
    topup = funds.complete_topup(response.get_json()["id"])
    replayed = response.headers.get("Idempotent-Replayed")
    return respond(_topup_out(topup), 201, headers={"Idempotent-Replayed": replayed} if replayed else None)


@endpoint(bp, "/withdrawals", "POST", summary="Withdraw to a bound card (paid out asynchronously)",
          body=WithdrawalRequest, response=WithdrawalOut, status=202, idempotent=True, location="/withdrawals/{id}",
          errors=(*FROM_CALLER_REFUSALS, IdentityNotVerified, CardNotFound, LimitExceeded, InsufficientFunds))
def create_withdrawal() -> Response:
    user = current_caller()
    req = parse_body(WithdrawalRequest)
    return guarded(user.id, req, lambda: (202, _withdrawal_out(funds.request_withdrawal(
        user.id, req.bank_card_id, req.amount, req.currency)).model_dump(mode="json")))


@endpoint(bp, "/withdrawals/<withdrawal_id>", "GET", summary="One of my withdrawals", response=WithdrawalOut)
def get_withdrawal(withdrawal_id: str) -> Response:
    return respond(_withdrawal_out(funds.get_withdrawal(current_caller().id, withdrawal_id)))


@endpoint(bp, "/transfers", "POST", summary="Pay a phone number from my balance", body=TransferRequest,
          response=TransferOut, status=201, idempotent=True,
          errors=(*FROM_CALLER_REFUSALS, RecipientNotFound, CannotPaySelf, LimitExceeded, PayeeLimitExceeded,
                  InsufficientFunds))
def create_transfer() -> Response:
    user = current_caller()
    req = parse_body(TransferRequest)
    to_phone = normalize_phone(req.to_phone, "to_phone")

    def effect() -> tuple[int, dict[str, Any]]:
        payment = funds.pay_phone(user.id, to_phone, req.amount, req.currency, req.note)
        posted = payment.transfer
        return 201, TransferOut(id=posted.id, amount=posted.amount, currency=posted.currency, to_phone=to_phone,
                                balance_after=posted.debit_balance_after,
                                created_at=posted.created_at).model_dump(mode="json")

    # The payee as normalised, in the request's fingerprint too: the same number spelt another way is the same request.
    return guarded(user.id, req.model_copy(update={"to_phone": to_phone}), effect)
