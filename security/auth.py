"""Who is calling: the bearer token in ``Authorization`` and nothing else (a cookie never authenticates)."""

from __future__ import annotations

from flask import g, request

from core.db import run_in_transaction
from core.errors import Forbidden, Unauthenticated
from security.models import AuthSession, User
from security.secrets_guard import LOGIN, raise_if_locked
from security.tokens import authenticate


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
        session = authenticate(token.strip())
        raise_if_locked(session.user.phone, LOGIN)
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
