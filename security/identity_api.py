"""HTTP endpoints of real-name verification: ``POST`` and ``GET /api/v1/me/identity``.

``POST`` answers 201 when it verified the account now and 200 when it repeats an earlier verification with
the same name and number (safe to retry). ``GET`` always answers 200: ``{"verified": false, ...}`` for an
account not yet verified, so clients need no special case for a 404.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from pydantic import BaseModel, Field

from core.api import RequestModel, endpoint, parse_body, respond
from core.errors import AppError
from core.ratelimit import client_key, limit
from security import identity
from security.auth import current_caller, current_user
from security.errors import AccountRecentlyRecovered
from security.identity_errors import (
    AlreadyVerified,
    IdentityMismatch,
    IdentityProviderUnavailable,
    IdNumberTaken,
    InvalidIdNumber,
    InvalidRealName,
)
from security.identity_models import Identity

bp = Blueprint("identity", __name__, url_prefix="/api/v1")

# Each attempt asks a (paid, in production) provider whether a name and a number belong together: cap it
# per account so a stolen session cannot use the endpoint to test guesses at scale.
ATTEMPTS_PER_ACCOUNT = "10 per day"


class IdentityRequest(RequestModel):
    real_name: str = Field(min_length=1, max_length=64, description="The name exactly as on the ID card")
    id_number: str = Field(min_length=1, max_length=32, description="18-character resident ID; spaces are ignored")


class IdentityOut(BaseModel):
    verified: bool
    real_name: str | None = Field(default=None, description="Masked: 张三 → *三, John Doe → J*** D**")
    id_last4: str | None = Field(default=None, description="Last four characters of the ID number")
    verified_at: datetime | None = None


def _account_key() -> str:
    try:
        return "identity:" + current_caller().id
    except AppError:  # not signed in: the view answers 401 itself; count the client address meanwhile
        return "identity-anonymous:" + client_key()


def _out(found: Identity | None) -> IdentityOut:
    if found is None:
        return IdentityOut(verified=False)
    return IdentityOut(verified=True, real_name=identity.mask_name(found.real_name), id_last4=found.id_last4,
                       verified_at=found.verified_at)


@endpoint(bp, "/me/identity", "POST", summary="Verify my real name with a resident ID (201; 200 on a repeat)",
          body=IdentityRequest, response=IdentityOut, status=201, extra_statuses=(200,), location="/me/identity",
          errors=(InvalidIdNumber, InvalidRealName, IdentityMismatch, IdNumberTaken, AlreadyVerified,
                  IdentityProviderUnavailable, AccountRecentlyRecovered))
@limit(ATTEMPTS_PER_ACCOUNT, key_func=_account_key)
def verify_identity():
    user = current_user()
    req = parse_body(IdentityRequest)
    result = identity.verify_identity(user, req.real_name, req.id_number)
    return respond(_out(result.identity), 201 if result.created else 200)


@endpoint(bp, "/me/identity", "GET", summary="My real-name verification status", response=IdentityOut)
def identity_status():
    return respond(_out(identity.identity_of(current_caller().id)))
