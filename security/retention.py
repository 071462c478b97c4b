"""Expired credentials are deleted, so that the token and code tables hold what is live rather than every
login, refresh and code request ever made (an app refreshing every 15 minutes writes two token rows each time).

A bearer token or an SMS code is deleted ``EXPIRED_CREDENTIALS_KEEP_HOURS`` after it expired. Nothing a client
sees changes: an expired token or code is refused with the same answer as an unknown one. What the delay keeps is
the one use of a dead row: a spent refresh token presented again while its row is kept still revokes its session
(``security.tokens.refresh``), also just after the token expired. Sessions, devices and lock states are kept.

The background worker (``flask worker``, and the dev server's thread) runs ``purge_expired`` every hour. It
deletes in batches of ``batch`` rows, each batch its own short transaction, so a large backlog never holds
locks or a transaction for long; several workers at once only share the work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import delete, select

from core import clock
from core.db import db, run_in_transaction
from security.models import AuthToken, SmsCode


def _purge_table(key: Any, expires_at: Any, cutoff: datetime, batch: int) -> int:
    table = key.class_

    def one_batch() -> int:
        doomed = select(key).where(expires_at < cutoff).limit(batch)
        result = db.session.execute(delete(table).where(key.in_(doomed)))
        return int(getattr(result, "rowcount", 0) or 0)

    total = 0
    while True:
        deleted = run_in_transaction(one_batch)
        total += deleted
        if deleted < batch:
            return total


def purge_expired(now: datetime | None = None, batch: int = 5000) -> int:
    """Delete the tokens and SMS codes that expired more than ``EXPIRED_CREDENTIALS_KEEP_HOURS`` ago; returns
    how many rows went."""
    cutoff = (now or clock.now()) - timedelta(hours=current_app.config["EXPIRED_CREDENTIALS_KEEP_HOURS"])
    return (_purge_table(AuthToken.token_hash, AuthToken.expires_at, cutoff, batch)
            + _purge_table(SmsCode.id, SmsCode.expires_at, cutoff, batch))
