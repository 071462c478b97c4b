"""Who is calling: the bearer token in ``Authorization`` and nothing else (a cookie never authenticates)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g, request
from sqlalchemy import bindparam, select

from core import clock
from core.db import db, run_in_transaction
from core.errors import Forbidden, Unauthenticated
from security.models import AuthSession, AuthToken, CredentialLock, User
from security.secrets_guard import LOGIN, STATE_COLUMNS, refuse_if_locked, state_of
from security.tokens import ACCESS, token_hash

_locks = CredentialLock.__table__
# Built once, run by every authenticated request: the token, its session, the user and the login lock state in
# one statement. Only the user is an ORM object; the token's and the session's few columns come as plain values
# (materialising three objects per request cost more than the statement itself).
_CALLER = (
    select(User, AuthToken.kind, AuthToken.expires_at, AuthSession.id.label("session_id"), AuthSession.device_id,
           AuthSession.revoked_at, *STATE_COLUMNS)
    .select_from(AuthToken)
    .join(AuthSession, AuthSession.id == AuthToken.session_id)
    .join(User, User.id == AuthSession.user_id)
    .outerjoin(_locks, (_locks.c.subject == User.phone) & (_locks.c.kind == LOGIN))
    .where(AuthToken.token_hash == bindparam("token_hash"))
)


@dataclass(frozen=True)
class CallerSession:
    """The caller's live session: its id, its device's id and the account it belongs to."""

    id: str
    device_id: str
    user: User


def current_session() -> CallerSession:
    """The caller's live session. Raises ``Unauthenticated``; ``LoginLocked`` while the login password is
    locked (a login lock leaves nothing reachable, not even with a token issued before)."""
    cached = g.get("auth_session")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 128:
        raise Unauthenticated("Send 'Authorization: Bearer <access token>'.")

    def load() -> CallerSession:
        row = db.session.execute(_CALLER, {"token_hash": token_hash(token.strip())}).first()
        if row is None or row.kind != ACCESS or row.expires_at <= clock.now() or row.revoked_at is not None:
            raise Unauthenticated("The access token is missing, expired or revoked.")
        refuse_if_locked(LOGIN, state_of(row))
        return CallerSession(row.session_id, row.device_id, row.User)

    session = run_in_transaction(load, read_only=True)
    g.auth_session = session
    return session


def current_user() -> User:
    return current_session().user


def current_staff() -> User:
    user = current_user()
    if not user.is_staff:
        raise Forbidden("Staff only.")
    return user
