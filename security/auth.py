"""Who is calling: the bearer token in ``Authorization`` and nothing else (a cookie never authenticates)."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import contains_eager

from core.db import db, run_in_transaction
from core.errors import Forbidden, Unauthenticated
from security.models import AuthSession, AuthToken, CredentialLock, User
from security.secrets_guard import LOGIN, STATE_COLUMNS, refuse_if_locked, state_of
from security.tokens import live_session, token_hash

_locks = CredentialLock.__table__
# Built once, run by every authenticated request: the token, its session, the user and the login lock state in
# one statement.
_CALLER = (
    select(AuthToken, *STATE_COLUMNS)
    .join(AuthToken.session)
    .join(AuthSession.user)
    .outerjoin(_locks, (_locks.c.subject == User.phone) & (_locks.c.kind == LOGIN))
    .options(contains_eager(AuthToken.session).contains_eager(AuthSession.user))
    .where(AuthToken.token_hash == bindparam("token_hash"))
)


def current_session() -> AuthSession:
    """The caller's live session. Raises ``Unauthenticated``; ``LoginLocked`` while the login password is
    locked (a login lock leaves nothing reachable, not even with a token issued before)."""
    cached = g.get("auth_session")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or len(token) > 128:
        raise Unauthenticated("Send 'Authorization: Bearer <access token>'.")

    def load() -> AuthSession:
        row = db.session.execute(_CALLER, {"token_hash": token_hash(token.strip())}).first()
        session = live_session(None if row is None else row[0])
        refuse_if_locked(LOGIN, state_of(row))
        return session

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
