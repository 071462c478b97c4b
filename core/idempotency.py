"""Idempotency keys for money-moving POSTs.

The record of a key is inserted **in the same transaction as the effect it guards**, before the effect:

* a retry with the same key and the same request replays the stored answer;
* the same key with a different request is refused (422 ``idempotency_key_reused``);
* concurrent duplicates: the second insert (``ON CONFLICT DO NOTHING``) waits on the unique index until the
  first transaction ends. If the first committed, the second inserts nothing and replays the stored answer;
  if the first rolled back, the second's insert goes ahead and it proceeds. Either way there is exactly one
  effect.

Only successful answers are stored. A request that failed changed nothing (its transaction rolled back), so
a retry with the same key runs again, which is what a client retrying after an error wants.

Keys live at least ``IDEMPOTENCY_TTL_HOURS`` (default 24) and are purged by the background worker after.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core import clock, sql
from core.db import UTCDateTime, db, delete_in_batches, run_in_transaction
from core.errors import IdempotencyKeyMissing, IdempotencyKeyReused, ValidationFailed
from core.sql import execute_carrying

_KEY_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,255}")  # the whole key (fullmatch): "$" lets a final "\n" by


class IdempotencyRecord(db.Model):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


# Every money-moving request runs these, on the driver's cursor (``core.sql``). The claim waits on the unique
# index for a concurrent duplicate's transaction; the answer's UPDATE, the request's last write, carries the
# alerts and timeline entries its effect queued (``execute_carrying``).
_CLAIM = sql.Statement(
    "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES (:scope, :key, :request_hash, :now)"
    " ON CONFLICT DO NOTHING RETURNING id")
_STORED = sql.Statement(
    "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE scope = :scope AND key = :key")
_STORE_ANSWER = ("UPDATE idempotency_keys SET status_code = :status_code, response_body = :response_body"
                 " WHERE id = :record_id")


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    """A stable hash of what the request asks for. Callers leave secrets (passwords) out of ``body``."""
    canonical = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str | None) -> str:
    if key is None or key == "":
        raise IdempotencyKeyMissing("Send an Idempotency-Key header (for example a UUID) with this request.")
    if not _KEY_PATTERN.fullmatch(key):
        raise ValidationFailed.field(
            "Idempotency-Key", "invalid_idempotency_key", "Use 1-255 letters, digits, '.', '_', ':' or '-'."
        )
    return key


def _stored_answer(scope: str, key: str, request_hash: str) -> tuple[int, dict[str, Any]] | None:
    record = _STORED.one(scope=scope, key=key)
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused("This Idempotency-Key was used with a different request.")
    assert record.status_code is not None and record.response_body is not None
    return record.status_code, json.loads(record.response_body)


class _KeyFree(Exception):
    """Rolls back ``stored_answer``'s trial claim: no request holds the key."""


def stored_answer(scope: str, key: str, request_hash: str) -> tuple[int, dict[str, Any]] | None:
    """The answer stored for ``(scope, key)``, if the request that used it first has one; raises
    ``IdempotencyKeyReused`` when that request was another. For a step that must not run on a replay (a card
    top-up before the effect), read before it; ``run_idempotent`` still decides.

    It tries the claim and rolls it back: the claim waits for a request that holds the key and has not committed yet,
    whose answer a plain read could not see (an audit saw a card charged for a request then refused 422
    ``idempotency_key_reused``). Two requests that both get here before either claims still both run their step."""

    def trial() -> tuple[int, dict[str, Any]] | None:
        if _CLAIM.scalar(scope=scope, key=key, request_hash=request_hash, now=clock.now()) is not None:
            raise _KeyFree
        return _stored_answer(scope, key, request_hash)

    try:
        return run_in_transaction(trial)
    except _KeyFree:
        return None


def run_idempotent(
    scope: str, key: str | None, request_hash: str, effect: Callable[[], tuple[int, dict[str, Any]]]
) -> tuple[int, dict[str, Any], bool]:
    """Run ``effect`` at most once per ``(scope, key)``; returns ``(status, body, replayed)``."""
    key = check_key(key)

    def attempt() -> tuple[int, dict[str, Any], bool]:
        # Claims the key before the effect: a concurrent duplicate waits here until this transaction ends.
        record_id = _CLAIM.scalar(scope=scope, key=key, request_hash=request_hash, now=clock.now())
        if record_id is None:
            stored = _stored_answer(scope, key, request_hash)
            if stored is None:  # purged between the two statements: an expired key starts afresh
                return attempt()
            return stored[0], stored[1], True
        status, body = effect()
        execute_carrying(_STORE_ANSWER, {"record_id": record_id, "status_code": status,
                                         "response_body": json.dumps(body, separators=(",", ":"))})
        return status, body, False

    return run_in_transaction(attempt)


def purge_expired(now: datetime | None = None, batch: int = 5000) -> int:
    """Delete keys older than the retention period, ``batch`` at a time; returns how many."""
    cutoff = (now or clock.now()) - timedelta(hours=current_app.config["IDEMPOTENCY_TTL_HOURS"])
    return delete_in_batches(IdempotencyRecord.id, IdempotencyRecord.created_at < cutoff, batch=batch)
