"""Who is calling: the bearer token in ``Authorization`` and nothing else (a cookie never authenticates).

Every authenticated request runs ``current_session``: the token, its session and the account's few columns a
request needs (``Caller``), in one statement on the driver's cursor (``core.sql``). A login lock does not refuse a
token already issued: the lock stops password guessing (DESIGN 4.2), and the guesser is not the holder of a session;
refusing the owner's sessions let anyone who knew a number shut its owner out, again every three hours, while an
escrow's deadlines ran (a seller kept from refusing a refund until silence agreed to it; found by an audit).
A read made for ``CALLER`` (the balance, a statement page, a trade, the trade list, the alert list) carries that
statement inside its own (``core.sql.Joined``), so such a GET costs one statement; the same checks decide, before
its rows are used. Endpoints that need the account as an ORM object (to change it) ask ``current_user()``, which
loads it by primary key then; the others (balances, payments, trades) never pay for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from flask import g, request

from core import clock, sql
from core.db import db, run_in_transaction
from core.errors import Forbidden, Unauthenticated
from security.models import User
from security.tokens import ACCESS, token_hash

_CALLER = sql.Statement(
    "SELECT u.id, u.phone, u.locale, u.is_staff, t.kind, t.expires_at, s.id AS session_id, s.device_id,"
    " s.revoked_at"
    " FROM auth_tokens t JOIN auth_sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id"
    " WHERE t.token_hash = :token_hash",
    utc=["expires_at", "revoked_at"], boolean=["is_staff"],
)


class Caller(NamedTuple):
    """The account behind the request, as read at authentication: enough to address it and its messages."""

    id: str
    phone: str
    locale: str
    is_staff: bool


class CallerSession(NamedTuple):
    """The caller's live session: its id, its device's id and the account it belongs to."""

    id: str
    device_id: str
    caller: Caller


def require_token() -> str:
    """The hash of the request's bearer token; raises ``Unauthenticated`` when there is none. A view that reads for
    ``CALLER`` after validating its query calls this first, so a request without a token is refused as such (401)
    before anything else is said about it, as by every other endpoint."""
    hashed = g.get("auth_token_hash")
    if hashed is None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > 128:
            raise Unauthenticated("Send 'Authorization: Bearer <access token>'.")
        hashed = g.auth_token_hash = token_hash(token.strip())
    return hashed


def _session_of(row: Any) -> CallerSession:
    """The live session in a row of ``_CALLER`` (None: no such token), remembered for the rest of the request.
    Raises as ``current_session``."""
    if row is None or row.kind != ACCESS or row.expires_at <= clock.now() or row.revoked_at is not None:
        raise Unauthenticated("The access token is missing, expired or revoked.")
    session = g.auth_session = CallerSession(row.session_id, row.device_id,
                                             Caller(row.id, row.phone, row.locale, row.is_staff))
    return session


def current_session() -> CallerSession:
    """The caller's live session. Raises ``Unauthenticated``."""
    cached = g.get("auth_session")
    if cached is not None:
        return cached
    hashed = require_token()
    return run_in_transaction(lambda: _session_of(_CALLER.one(token_hash=hashed)), read_only=True)


class _Caller:
    """The request's caller as a ``core.sql.Viewer``: a read for the caller authenticates the request in the same
    statement (``core.sql.Joined``: who holds this token, and that user's rows), so an endpoint whose work is one
    read costs one statement instead of two. Once the request is authenticated, reads run alone."""

    def __init__(self) -> None:
        self._joined: dict[sql.Statement, sql.Joined] = {}

    def read(self, statement: sql.Statement, params: Mapping[str, Any]) -> list[Any]:
        cached = g.get("auth_session")
        if cached is not None:
            return sql.Viewing(cached.caller.id, cached.caller.is_staff).read(statement, params)
        hashed = require_token()
        joined = self._joined.get(statement)
        if joined is None:
            joined = self._joined[statement] = sql.Joined(_CALLER, statement,
                                                          {"viewer_id": "id", "viewer_staff": "is_staff"})
        lead, rows = joined.all({**params, "token_hash": hashed})
        _session_of(lead)  # raises before anyone sees the rows
        return rows


#: The request's caller, for services that read on behalf of a ``core.sql.Viewer``.
CALLER = _Caller()


def current_caller() -> Caller:
    return current_session().caller


def current_user() -> User:
    """The caller's account as an ORM object, for endpoints that change it (one SELECT by primary key, unless
    this request loaded it already). Raises as ``current_session``."""
    user_id = current_caller().id
    user = run_in_transaction(lambda: db.session.get(User, user_id), read_only=True)
    if user is None:  # deleted between the two reads: the token no longer names anyone
        raise Unauthenticated("The access token is missing, expired or revoked.")
    return user


def current_staff() -> Caller:
    caller = current_caller()
    if not caller.is_staff:
        raise Forbidden("Staff only.")
    return caller
