"""Expired credentials are deleted, so that the token and code tables hold what is live rather than every
login, refresh and code request ever made (an app refreshing every 15 minutes writes two token rows each time).

A bearer token or an SMS code is deleted ``EXPIRED_CREDENTIALS_KEEP_HOURS`` after it expired. Nothing a client
sees changes: an expired token or code is refused with the same answer as an unknown one. What the delay keeps is
the one use of a dead row: a spent refresh token presented again while its row is kept still revokes its session
(``security.tokens.refresh``), also just after the token expired. A session whose tokens are all gone can never
be used again and goes with its last token (its revocation reason with it); devices and lock states are kept.

The background worker (``flask worker``, and the dev server's thread) runs ``purge_expired`` every hour, in
batches of ``batch`` rows (``core.db.delete_in_batches``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from core import clock
from core.db import delete_in_batches
from security.models import AuthSession, AuthToken, SmsCode


def purge_expired(now: datetime | None = None, batch: int = 5000) -> int:
    """Delete the tokens and SMS codes that expired more than ``EXPIRED_CREDENTIALS_KEEP_HOURS`` ago, then the
    sessions left without a token; returns how many rows went."""
    cutoff = (now or clock.now()) - timedelta(hours=current_app.config["EXPIRED_CREDENTIALS_KEEP_HOURS"])
    tokens = delete_in_batches(AuthToken.token_hash, AuthToken.expires_at < cutoff, batch=batch)
    has_token = select(AuthToken.token_hash).where(AuthToken.session_id == AuthSession.id).exists()
    # created before the cutoff: a session and its first tokens are written in one transaction anyway
    sessions = delete_in_batches(AuthSession.id, AuthSession.created_at < cutoff, ~has_token, batch=batch)
    codes = delete_in_batches(SmsCode.id, SmsCode.expires_at < cutoff, batch=batch)
    return tokens + sessions + codes
