"""The dispatcher: claims due alerts from the outbox, hands them to the sender, records the outcome.

Several dispatchers may run at once (``flask notifications dispatch`` processes, the dev server's thread).
Each message goes through three steps in short transactions (statements on the driver's cursor, ``core.sql``),
and the sending itself happens outside any:

0. ``expand`` (in the claim's transaction): the ``alert_events`` a change wrote (``outbox.enqueue``: one row per
   transaction, holding its messages) are deleted oldest first, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, by the
   statement that reads them, and their messages written as ``pending`` alerts, due at once. Delete and inserts
   commit together or not at all, so each message becomes exactly one alert, whichever dispatcher expands it.
1. ``claim``: due rows (``pending`` whose time has come, or ``sending`` whose lease ran out because their
   dispatcher died) are selected ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serialises writers with
   ``BEGIN IMMEDIATE``), stamped with a fresh ``claim_token`` and a lease, and marked ``sending``.
2. ``begin_attempt``: just before the hand-over, and only while the claim is still ours, the attempt is
   written down: ``attempts + 1``, ``in_flight_since = now``, the lease renewed. A dispatcher that lost its
   claim (its lease ran out and another took the row) sends nothing.
3. ``record_sent`` / ``record_failure``: the outcome, fenced by the claim token; ``in_flight_since`` cleared.

``dispatch_once`` records each outcome in the transaction that begins the next hand-over (the batch's last
outcome in one of its own): one transaction per message besides the batch's claim, and still never more
than one message in flight.

Delivery guarantee: **at least once, with duplicates confined to hand-overs whose outcome is unknown.**
Every committed alert is handed to the provider until the provider accepts it, refuses it for good
(``failed`` at once), or it is older than ``SMS_MAX_AGE_SECONDS`` (``failed`` and logged as an error; the
``flask notifications status`` command shows it). The age is looked at when a try fails: an alert no dispatcher
tried (every dispatcher was down) is sent when one comes back, however late, because an alert that silently
disappears (a password changed, money moved) is the worse harm. A one-time code's message (``models.CODE_EVENT``)
is the exception: it is worth nothing once its code has expired (``models.CODE_LIFETIME`` after the alert was made),
so from then on it is given up instead of handed over, whether its tries failed or none was made (``failed``, "expired
unsent", its body blanked, a warning: the user asks for a new code, no operator has anything to do). It is given up
too (``failed``, "superseded", logged as information) when a newer code's message to the same number and account
has already been handed over: the user asked again, and sent after the newer one (a retry once the provider is
back) this one would be the last code on the phone, and refused if the newer one voided it (the row does not say
for which purpose a code is; codes of one account, or of one free number, are rare enough to count as one). Two
still unsent go out oldest first, so the newer comes last. Only an older code gives way to a newer one, looked up
when its hand-over is about to begin; two dispatchers holding both at once never drop the newer, at worst they send
both.

A message is sent twice only when the provider accepted it but the acceptance was never recorded: the dispatcher
died (or lost the database) between the provider's answer and step 3, or the provider's answer was lost on the wire
(a read timeout after Twilio took the request). Twilio's Messages API has no idempotency key, so no client can
close that window; we narrow it:

- one message is in flight per dispatcher at a time, so a crash puts at most one message in doubt per
  dispatcher; rows it had claimed but not started are sent later without any doubt;
- such a row keeps ``in_flight_since`` (after a crash, and after a failure that may hide an accepted
  message: a read timeout, a connection dropped mid-answer); before re-sending it the dispatcher checks
  whether a delivery callback meanwhile proved Twilio has the message (the callback URL carries the alert id
  and sets ``provider_id``; a lost answer is retried no sooner than a lease, as long as a dead dispatcher's
  hand-over waits, to give that callback time): if so it is recorded as sent and **not** sent again;
  otherwise it is re-sent and ``resends_in_doubt`` is counted: the upper bound of duplicates, shown by the
  status command (a 5xx answer is assumed to mean Twilio created nothing);
- the HTTP client never retries by itself, and the lease (``SMS_LEASE_SECONDS``, default 60 s, and more than
  twice the send timeout: ``core.config``) is far longer than a hand-over normally takes
  (``SMS_SEND_TIMEOUT_SECONDS``, default 10 s), so a live dispatcher does not have a message taken from under it.
  The timeout bounds each wait for the network, not the whole hand-over: an answer trickling in a few bytes at a
  time can outlast the lease, and the message is then sent again by the dispatcher that takes it over (one more
  resend in doubt).

The opposite choice (never re-send an alert whose outcome is unknown) would turn each such duplicate into a
lost alert; for a security alert a duplicate is the lesser harm.

Failures: a permanent one (invalid, unreachable or unsubscribed number) fails the alert at once; a
transient one (429, 5xx, timeouts, connection errors, configuration) is retried with exponential backoff
and jitter, the last try falling at the alert's maximum age (a code's message: given up when its code expires).
When the provider's answer says when to come back (``Retry-After``, which Twilio sends with a 429), the next try
is no sooner than that, and still no later than the maximum age.
"""

from __future__ import annotations

import functools
import logging
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from flask import current_app
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import InterfaceError, OperationalError

from core import clock, sql
from core.db import driver_reason, in_snapshot, run_in_transaction
from core.ids import new_id
from core.worker import Stop
from notifications.models import (
    CODE_EVENT,
    CODE_LIFETIME,
    FAILED,
    FAILED_WHERE,
    IN_DOUBT_WHERE,
    PENDING,
    REDACTED,
    SENDING,
    STATUSES,
    UNSENT_WHERE,
    Alert,
    AlertEvent,
    status_after_hand_over,
)
from notifications.outbox import decoded
from notifications.sms import SendFailed, SmsSender
from notifications.templates import render

log = logging.getLogger(__name__)
T = TypeVar("T")

# How the ``last_error`` of a one-time code's message given up (expired unsent, or superseded) begins: /metrics counts
# those apart from the alerts that failed (``QueueStatus.codes_given_up``).
CODE_GIVEN_UP = "one-time code "


@dataclass(frozen=True)
class Outgoing:
    """What the sender needs of one claimed alert (plain values: no ORM object outlives its transaction)."""

    id: str
    to: str
    body: str
    event: str
    created_at: str


@dataclass
class Batch:
    token: str
    alerts: list[Outgoing] = field(default_factory=list)


def _setting(name: str) -> float:
    return current_app.config[name]


def _lease() -> timedelta:
    return timedelta(seconds=_setting("SMS_LEASE_SECONDS"))


def backoff(attempts: int, base: float = 2.0, cap: float = 600.0) -> timedelta:
    """Exponential backoff with jitter: after attempt n, between half and all of ``base * 2**(n-1)``,
    capped at ``cap`` seconds. The random half spreads retries of alerts that failed together."""
    # The exponent stops growing long before it matters (2**64 is past any cap): 2**1024 is no float at all.
    ceiling = min(cap, base * 2 ** min(max(0, attempts - 1), 64))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


# Every alert passes through these, on the driver's cursor (``core.sql``): a dispatcher spends its time here.
_DUE = (f"SELECT id FROM alerts WHERE {UNSENT_WHERE} AND next_attempt_at <= :now"  # noqa: S608 - constants
        " ORDER BY next_attempt_at LIMIT :limit")
_CLAIM_SQL = ("UPDATE alerts SET status = 'sending', claim_token = :token, next_attempt_at = :lease_end,"
              " updated_at = :now WHERE id IN ({due}) RETURNING id, to_phone, body, event, created_at")
_CLAIM = sql.Statement({"postgresql": _CLAIM_SQL.format(due=_DUE + " FOR UPDATE SKIP LOCKED"),
                        "sqlite": _CLAIM_SQL.format(due=_DUE)}, utc=["created_at"])
_STATE_SQL = ("SELECT status, claim_token, provider_id, provider_status, in_flight_since, sent_at, attempts, event,"
              " created_at, to_phone, user_id FROM alerts WHERE id = :id")
_LOCK = sql.Statement({"postgresql": _STATE_SQL + " FOR UPDATE", "sqlite": _STATE_SQL},  # SQLite: BEGIN IMMEDIATE
                      utc=["in_flight_since", "sent_at", "created_at"])
# A newer code's message to the same number and account (or, neither having one, to the same free number), already
# handed over: only a code's message asks, and ``ix_alerts_user_recent`` reads just that account's alerts made since
# it (ids are time-ordered; a code's message older than its lifetime never gets here). Newer by id: the two requests
# of one number and purpose run one after the other (``security.codes``), so the second's id is made after the first's.
_NEWER_CODE_SQL = (f"SELECT id FROM alerts WHERE user_id {{who}} AND id > :id AND to_phone = :to_phone"  # noqa: S608
                   f" AND event = '{CODE_EVENT}' AND sent_at IS NOT NULL LIMIT 1")
_NEWER_CODE = {True: sql.Statement(_NEWER_CODE_SQL.format(who="= :user_id")),
               False: sql.Statement(_NEWER_CODE_SQL.format(who="IS NULL"))}
_BEGIN = sql.Statement(
    "UPDATE alerts SET in_flight_since = :now, attempts = attempts + 1, resends_in_doubt = resends_in_doubt + :doubt,"
    " next_attempt_at = :lease_end, updated_at = :now WHERE id = :id")
# A sensitive alert's body (a one-time code) is blanked once it is sent.
_SENT = sql.Statement(
    "UPDATE alerts SET status = :status, provider_id = :provider_id, sent_at = :sent_at, last_error = NULL,"
    " claim_token = NULL, in_flight_since = NULL, updated_at = :now,"
    " body = CASE WHEN sensitive THEN :redacted ELSE body END WHERE id = :id")
# ... and blanked too when it is given up: a live code must not stay in the outbox of a message never sent.
_FAILED = sql.Statement(
    "UPDATE alerts SET status = :status, last_error = :last_error, in_flight_since = :in_flight_since,"
    " claim_token = NULL, next_attempt_at = COALESCE(:next_attempt_at, next_attempt_at), updated_at = :now,"
    " body = CASE WHEN sensitive AND :give_up THEN :redacted ELSE body END WHERE id = :id")
_RELEASE = sql.Statement(
    "UPDATE alerts SET status = 'pending', claim_token = NULL, next_attempt_at = :now"
    " WHERE claim_token = :token AND status = 'sending'")


# The events changes wrote, oldest first, deleted by the statement that reads them (see step 0 above).
_TAKE_SQL = ("DELETE FROM alert_events WHERE id IN (SELECT id FROM alert_events ORDER BY id LIMIT :limit{lock})"
             " RETURNING id, created_at, messages")
_TAKE_EVENTS = sql.Statement({"postgresql": _TAKE_SQL.format(lock=" FOR UPDATE SKIP LOCKED"),
                              "sqlite": _TAKE_SQL.format(lock="")}, utc=["created_at"])
_alerts = Alert.__table__


def _expand(limit: int) -> tuple[int, int]:
    """Turn up to ``limit`` events into ``pending`` alerts, in the caller's transaction; how many events it took and
    how many alerts it wrote.

    A message already an alert (its event row written again: restored from a backup, replayed by hand) is not
    written twice, and logged as an error naming its event: the outbox goes on, and nobody gets a message twice."""
    events = _TAKE_EVENTS.all(limit=int(limit))
    if not events:
        return 0, 0
    now = clock.now()
    made = [(event.id, _event_rows(event, now)) for event in sorted(events, key=lambda event: event.id)]
    written = sql.insert_new_rows(_alerts, [row for _event_id, rows in made for row in rows], "id")
    if len(written) < sum(len(rows) for _event_id, rows in made):
        seen: set[str] = set()
        for event_id, rows in made:
            again: list[str] = []
            for row in rows:
                if row["id"] in seen or row["id"] not in written:
                    again.append(row["id"])
                seen.add(row["id"])
            if again:
                log.error("alert event %s carries %d message(s) already in the outbox (%s), not written again",
                          event_id, len(again), ", ".join(again[:5]))
    return len(events), len(written)


# What each message of an event holds (``outbox.enqueue``): the types its alert row needs, and the columns' widths.
_MESSAGE = {"id": (str,), "user_id": (str, type(None)), "to_phone": (str,), "event": (str,), "locale": (str,),
            "sensitive": (bool,), "params": (dict,)}
_WIDTHS = {"id": 40, "user_id": 40, "to_phone": 20, "event": 48, "locale": 8}


def _readable(message: Any) -> bool:
    return (isinstance(message, dict) and message.keys() == _MESSAGE.keys()
            and all(isinstance(message[key], types) for key, types in _MESSAGE.items())
            and all(len(message[key] or "") <= width for key, width in _WIDTHS.items()))


def _event_rows(event: Any, now: datetime) -> list[dict[str, Any]]:
    """The alert rows of one event. An event that cannot be read (only a hand-edited row could be: ``enqueue``
    writes them) becomes one ``failed`` alert naming it, logged as an error, so that it neither stops the outbox
    (it would fail every expansion) nor vanishes without a trace."""
    try:
        messages = decoded(event.messages)
        if not isinstance(messages, list) or not messages or not all(_readable(message) for message in messages):
            raise ValueError("not a list of messages as enqueue writes them")
    except ValueError as exc:  # json.JSONDecodeError included
        log.error("alert event %s cannot be read and is recorded as a failed alert: %s", event.id, exc)
        return [{"id": new_id("sms"), "user_id": None, "to_phone": "", "event": "unreadable_event", "locale": "",
                 "sensitive": True, "status": FAILED, "last_error": f"event {event.id} cannot be read: {exc}"[:2000],
                 "next_attempt_at": event.created_at, "created_at": event.created_at, "updated_at": now, "body": ""}]
    return [_alert_row(message, event.id, event.created_at, now) for message in messages]


def _alert_row(message: dict[str, Any], event_id: str, created_at: datetime, now: datetime) -> dict[str, Any]:
    """The ``alerts`` row of one message of an event, its text rendered. A text that cannot be rendered (a caller
    passed parameters its template does not take) is a ``failed`` alert with the reason, logged as an error: the
    rest of the outbox goes on."""
    params = message.pop("params")
    row = {**message, "status": PENDING, "last_error": None, "next_attempt_at": created_at, "created_at": created_at,
           "updated_at": now}
    try:
        row["body"] = render(message["event"], message["locale"], params)
    except Exception as exc:  # any template error fails one alert, never the whole outbox
        log.error("alert %s (%s) of event %s cannot be rendered and is failed: %r",
                  message["id"], message["event"], event_id, exc)
        row.update(body="", status=FAILED, last_error=f"not rendered: {type(exc).__name__}: {exc}"[:2000])
    return row


def expand(limit: int | None = None) -> int:
    """Expand every waiting event into alerts now (or up to ``limit`` events), in transactions of their own; how
    many alerts. The dispatcher does this as it claims; tests and tools that read ``alerts`` call it first."""
    total, size = 0, int(limit or _setting("SMS_BATCH_SIZE"))
    while True:
        taken, made = run_in_transaction(lambda: _expand(size))
        total += made
        if not taken or limit:
            return total


def claim(batch_size: int) -> Batch:
    """Expand waiting events into alerts (step 0), then mark up to ``batch_size`` due alerts ``sending`` under a
    fresh claim token and lease: one transaction."""
    batch = Batch(token=secrets.token_hex(16))

    def work() -> list[Outgoing]:
        _expand(batch_size)
        now = clock.now()
        rows = _CLAIM.all(token=batch.token, lease_end=now + _lease(), now=now, limit=int(batch_size))
        return [Outgoing(row.id, row.to_phone, row.body, row.event, row.created_at.isoformat())
                for row in sorted(rows, key=lambda row: (row.created_at, row.id))]

    batch.alerts = run_in_transaction(work)
    return batch


def _mark_sent(alert_id: str, state: Any, provider_id: str, now: datetime) -> None:
    # A callback may have recorded the SID first (of this message, or of an earlier copy): keep it.
    _SENT.run(id=alert_id, status=status_after_hand_over(state.provider_status),
              provider_id=state.provider_id or provider_id, sent_at=state.sent_at or now, now=now, redacted=REDACTED)


def begin_attempt(alert_id: str, token: str) -> bool:
    """Write down that the message is about to be handed over; False when it must not be sent (the claim
    was lost, or a callback showed that the provider already has it)."""
    return run_in_transaction(lambda: _begin(alert_id, token))


def record_sent(alert_id: str, provider_id: str) -> None:
    """The provider accepted the message. Recorded even if our claim was lost meanwhile: it *was* sent."""
    run_in_transaction(lambda: _sent(alert_id, provider_id))


def record_failure(alert_id: str, token: str, error: SendFailed) -> None:
    """The provider refused the message: fail it (permanent, or too old) or schedule the next try."""
    run_in_transaction(lambda: _failed(alert_id, token, error))


# The steps themselves, each inside the caller's transaction.


def _begin(alert_id: str, token: str) -> bool:
    state = _LOCK.one(id=alert_id)
    if state is None or state.claim_token != token or state.status != SENDING:
        return False
    now = clock.now()
    if state.provider_id:
        # Only a delivery callback sets this before an outcome is recorded: the provider has the message
        # from a hand-over whose answer we never recorded. Sending again would be a duplicate.
        log.warning("alert %s: provider already has it (%s); recorded as sent, not sent again",
                    alert_id, state.provider_id)
        _mark_sent(alert_id, state, state.provider_id, now)
        return False
    if _code_expired(state, now):
        # Nobody could send it in time (the provider, or every dispatcher, was down): the code it carries is refused
        # by now, and a text still saying "valid for 10 minutes" would only mislead. No operator problem: a warning.
        log.warning("alert %s (%s): the code expired unsent after %d attempts; given up", alert_id, state.event,
                    state.attempts)
        _give_up(alert_id, state, f"{CODE_GIVEN_UP}expired unsent", now)
        return False
    newer = _newer_code(alert_id, state)
    if newer is not None:
        # The user asked again and the newer code went out, voiding this one: sent now (a retry after an outage), it
        # would land after the newer one, and the phone would show last a code that is refused. Never the other way:
        # only an older code gives way, so two dispatchers holding both at once at worst send both, as before.
        log.info("alert %s (%s): superseded by the newer code %s sent before it; given up", alert_id,
                 state.event, newer)
        _give_up(alert_id, state, f"{CODE_GIVEN_UP}superseded by a newer one ({newer}), sent before it", now)
        return False
    if state.in_flight_since is not None:
        log.warning("alert %s: the hand-over begun at %s has no known outcome; sending again",
                    alert_id, state.in_flight_since.isoformat())
    _BEGIN.run(id=alert_id, now=now, doubt=int(state.in_flight_since is not None), lease_end=now + _lease())
    return True


def _code_expired(state: Any, now: datetime) -> bool:
    """Whether ``state`` is a one-time code's message whose code can no longer be used (``models.CODE_LIFETIME``)."""
    return state.event == CODE_EVENT and now >= state.created_at + CODE_LIFETIME


def _newer_code(alert_id: str, state: Any) -> str | None:
    """The id of a newer one-time code's message to the same number and account already handed over, when ``state``
    is a code's."""
    if state.event != CODE_EVENT:
        return None
    has_user = state.user_id is not None
    params = {"id": alert_id, "to_phone": state.to_phone, **({"user_id": state.user_id} if has_user else {})}
    return _NEWER_CODE[has_user].scalar(params)


def _give_up(alert_id: str, state: Any, reason: str, now: datetime) -> None:
    """Fail the claimed alert without handing it over (again), its body blanked if sensitive. A hand-over of unknown
    outcome stays on record: a delivery report may still prove it went through."""
    _FAILED.run(id=alert_id, status=FAILED, last_error=reason[:2000], in_flight_since=state.in_flight_since,
                next_attempt_at=None, now=now, give_up=True, redacted=REDACTED)


def _sent(alert_id: str, provider_id: str) -> None:
    state = _LOCK.one(id=alert_id)
    if state is None:
        return
    # Failed with no hand-over on record: another dispatcher gave up while this one's hand-over hung, and it went
    # through after all (as ``callbacks`` does for a delivery report that proves the same).
    if state.status in (PENDING, SENDING) or (state.status == FAILED and state.sent_at is None):
        if state.status == FAILED:
            log.warning("alert %s: recorded as failed, but a hand-over went through as %s; recorded as sent",
                        alert_id, provider_id)
        _mark_sent(alert_id, state, provider_id, clock.now())
    else:
        log.warning("alert %s handed over again as %s after it was recorded as %s (%s)",
                    alert_id, provider_id, state.status, state.provider_id)


RETRY_LOGGED = "alert %s (%s): attempt %d failed, next at %s: %s"


def _failed(alert_id: str, token: str, error: SendFailed) -> None:
    state = _LOCK.one(id=alert_id)
    if state is None or state.claim_token != token or state.status != SENDING:
        return  # another dispatcher owns this alert now and decides its fate
    now = clock.now()
    if state.provider_id:
        # A delivery report came in while this answer was lost: the provider has the message after all.
        log.warning("alert %s: %s, but the provider reported it (%s); recorded as sent", alert_id, error,
                    state.provider_id)
        _mark_sent(alert_id, state, state.provider_id, now)
        return
    # The provider surely has nothing unless the answer was lost (``in_doubt``): then ``in_flight_since``
    # stays, so the next attempt first looks for a callback and otherwise counts itself a resend in doubt.
    in_flight_since = state.in_flight_since if error.in_doubt else None
    deadline = state.created_at + timedelta(seconds=_setting("SMS_MAX_AGE_SECONDS"))
    if state.event == CODE_EVENT:  # a code's message is worth a try only while the code lives
        deadline = min(deadline, state.created_at + CODE_LIFETIME)
    status, next_attempt_at, last_error = PENDING, None, str(error)
    if error.permanent:
        status = FAILED
        log.warning("alert %s (%s) refused for good after %d attempts: %s",
                    alert_id, state.event, state.attempts, error)
    elif _code_expired(state, now):
        status, last_error = FAILED, f"{CODE_GIVEN_UP}expired unsent; last try: {error}"
        log.warning("alert %s (%s): the code expired unsent after %d attempts; given up: %s",
                    alert_id, state.event, state.attempts, error)
    elif now >= deadline:
        status = FAILED
        log.error("alert %s (%s) still unsent after %d attempts and %s; given up: %s",
                  alert_id, state.event, state.attempts, now - state.created_at, error)
    else:
        delay = backoff(state.attempts, _setting("SMS_BACKOFF_BASE_SECONDS"), _setting("SMS_BACKOFF_MAX_SECONDS"))
        if error.retry_after is not None:
            # The provider said when to come back (a 429's Retry-After): never sooner, even when our own backoff
            # is shorter. Capped at the maximum age, where the alert gets its last try anyway (below).
            delay = max(delay, timedelta(seconds=min(error.retry_after, _setting("SMS_MAX_AGE_SECONDS"))))
        if error.in_doubt:
            # The provider may have the message: give its delivery report (which stops the re-send) as long to
            # arrive as after a dispatcher's death, not the backoff's first second or two.
            delay = max(delay, _lease())
        next_attempt_at = min(now + delay, deadline)
        # Each failed try is told: a provider that refuses every message (a wrong auth token, an outage) is otherwise
        # silent in the logs until alerts start to be given up a day later.
        log.warning(RETRY_LOGGED, alert_id, state.event, state.attempts, next_attempt_at.isoformat(timespec="seconds"),
                    error)
    _FAILED.run(id=alert_id, status=status, last_error=last_error[:2000], in_flight_since=in_flight_since,
                next_attempt_at=next_attempt_at, now=now, give_up=status == FAILED, redacted=REDACTED)


def _release(token: str) -> int:
    """Give back the alerts of a claim that were not started (a dispatcher stopping mid-batch)."""
    return _RELEASE.run(token=token, now=clock.now())


def dispatch_once(sender: SmsSender, batch_size: int | None = None, stop: Stop | threading.Event | None = None,
                  tally: Counter[str] | None = None) -> int:
    """Claim one batch and send it; returns how many alerts were claimed. Stops between two messages when
    ``stop`` is set, giving back what it had not started. ``tally`` counts the hand-overs: ``sent`` (the provider
    took the message), ``refused`` (it did not: retried later or failed, as ``queue_status`` shows) and ``in doubt``
    (no answer: it may have the message, and a retry waits for its word first).

    A hand-over's outcome is recorded in the transaction of the next step (the next ``begin``, the release,
    or one of its own after the batch's last message): it commits before, or with, the next message being
    marked in flight, so there is never more than one in flight, and a message costs one transaction."""
    batch = claim(batch_size or int(_setting("SMS_BATCH_SIZE")))
    outcome: Callable[[], None] | None = None  # the last hand-over's, not yet recorded

    def with_outcome(step: Callable[[], T]) -> T:
        nonlocal outcome
        pending, outcome = outcome, None

        def work() -> T:
            if pending is not None:
                pending()
            return step()

        return run_in_transaction(work)

    for item in batch.alerts:
        if stop is not None and stop.is_set():
            with_outcome(lambda: _release(batch.token))
            break
        if not with_outcome(lambda item=item: _begin(item.id, batch.token)):
            continue
        try:
            provider_id = sender.send(
                to=item.to, body=item.body, event=item.event, alert_id=item.id, created_at=item.created_at
            )
        except SendFailed as exc:
            outcome = functools.partial(_failed, item.id, batch.token, exc)
        except Exception as exc:  # a sender broke its contract: one message, not the whole batch
            # It may have reached the provider: retried as a hand-over of unknown outcome, so the rest of the
            # batch goes on now and this one still fails for good at its maximum age.
            log.exception("alert %s: the sender raised %s instead of SendFailed", item.id, type(exc).__name__)
            error = SendFailed(f"sender error: {type(exc).__name__}", permanent=False, in_doubt=True)
            outcome = functools.partial(_failed, item.id, batch.token, error)
        else:
            outcome = functools.partial(_sent, item.id, provider_id)
        if tally is not None:
            failure = outcome.args[2] if outcome.func is _failed else None
            tally["sent" if failure is None else "in doubt" if failure.in_doubt else "refused"] += 1
    if outcome is not None:
        with_outcome(lambda: None)
    return len(batch.alerts)


def dispatch_all(sender: SmsSender, batch_size: int | None = None, tally: Counter[str] | None = None) -> int:
    """Send until nothing is due (tests and the CLI's ``--once``); how many alerts were claimed (``tally``: as
    ``dispatch_once``)."""
    total = 0
    while claimed := dispatch_once(sender, batch_size, tally=tally):
        total += claimed
    return total


def run(sender: SmsSender, stop: Stop | threading.Event, interval: float | None = None,
        batch_size: int | None = None) -> None:
    """The dispatcher loop: send what is due, sleep ``interval`` when nothing is, until ``stop`` is set."""
    interval = interval if interval is not None else float(_setting("DISPATCH_INTERVAL_SECONDS"))
    log.info("dispatcher started")
    pause = max(interval, 1.0) * 5
    failing = ""  # what the last rounds failed on ("database", "bug"), logged once when it began
    while not stop.is_set():
        try:
            claimed = dispatch_once(sender, batch_size, stop)
        except (OperationalError, InterfaceError) as exc:
            # The database is unreachable: nothing can be claimed or recorded. Rows we hold come back when
            # their leases run out.
            if failing != "database":
                log.error("dispatcher cannot reach the database (%s); retrying every %.0fs, and logging when it can",
                          driver_reason(exc),
                          pause)
            failing = "database"
            stop.wait(pause)
            continue
        except Exception:  # a bug must not stop the SMS: logged once, and the loop goes on after a pause
            if failing != "bug":
                log.exception("dispatcher round failed; retrying every %.0fs, and logging when a round works", pause)
            failing = "bug"
            stop.wait(pause)
            continue
        if failing:
            log.info("dispatcher works again")
            failing = ""
        if not claimed:
            stop.wait(interval)
    log.info("dispatcher stopped")


class _Oldest(NamedTuple):
    id: str
    created_at: datetime
    last_error: str | None


@dataclass(frozen=True)
class QueueStatus:
    by_status: dict[str, int]
    oldest_unsent_id: str | None
    oldest_unsent_age: timedelta | None
    resends_in_doubt: int
    # Why the oldest alert is still unsent, when a try failed: a refused credential or permission holds every alert
    # without failing any until its maximum age, and this is where the operator reads the reason.
    oldest_unsent_error: str | None = None
    # Of the ``failed``: one-time code messages given up (expired unsent, or superseded by a newer code), no failure an
    # operator has anything to do about (counted only when ``failed`` is, and not with ``totals``).
    codes_given_up: int = 0

    def lines(self) -> list[str]:
        """The report as ``flask notifications status`` prints it."""
        out = [f"{status:<12}{self.by_status.get(status, 0):>9}" for status in STATUSES]
        if self.oldest_unsent_age is None:
            out.append("oldest unsent: none")
        else:
            out.append(f"oldest unsent: {int(self.oldest_unsent_age.total_seconds())}s ({self.oldest_unsent_id})")
            if self.oldest_unsent_error:
                out.append(f"last error of the oldest unsent: {self.oldest_unsent_error}")
        out.append(f"re-sent after an unknown outcome (possible duplicates): {self.resends_in_doubt}")
        return out


# What /metrics reads on every scrape, each through a partial index holding only such rows (``models.Alert``).
_UNSENT_COUNTS = select(Alert.status, func.count()).where(text(UNSENT_WHERE)).group_by(Alert.status)
_FAILED_COUNT = select(func.count()).select_from(Alert).where(text(FAILED_WHERE))
_CODES_GIVEN_UP = (select(func.count()).select_from(Alert)
                   .where(text(FAILED_WHERE), Alert.event == CODE_EVENT, Alert.last_error.startswith(CODE_GIVEN_UP)))
_OLDEST_UNSENT = (select(Alert.id, Alert.created_at, Alert.last_error).where(text(UNSENT_WHERE))
                  .order_by(Alert.created_at).limit(1))
_RESENDS_IN_DOUBT = select(func.coalesce(func.sum(Alert.resends_in_doubt), 0)).where(text(IN_DOUBT_WHERE))
# Messages still inside events (pending alerts-to-be), and the oldest event, by its time-ordered primary key.
_UNEXPANDED = select(func.coalesce(func.sum(AlertEvent.message_count), 0))
_OLDEST_EVENT = select(AlertEvent.id, AlertEvent.created_at).order_by(AlertEvent.id).limit(1)


def queue_status(*, totals: bool = False) -> QueueStatus:
    """Queue depth by status, the oldest alert not yet handed over, and how many re-sends were in doubt.

    ``by_status`` counts the alerts still to send (``pending``, which includes the messages of events no dispatcher
    has expanded yet, ``sending``) and the ``failed`` ones, each read
    through a partial index that holds only such rows, so that /metrics costs the same however many alerts were
    ever sent. ``totals`` counts every status instead (``sent``, ``delivered``, ``undelivered`` too), which reads
    the whole outbox: the ``flask notifications status`` report, on demand."""

    # One snapshot for all the reads: read one after the other in autocommit (PostgreSQL), the messages of an event
    # a dispatcher expanded between the count of alerts and the count of events were in neither (found by an audit:
    # "pending 0", with three waiting).
    def read(conn: Connection) -> tuple[dict[str, int], Any, int, int]:
        given_up = 0
        if totals:
            counts = dict(conn.execute(select(Alert.status, func.count()).group_by(Alert.status)).all())
        else:
            counts = dict(conn.execute(_UNSENT_COUNTS).all())
            failed = conn.scalar(_FAILED_COUNT)
            if failed:
                counts[FAILED] = failed
                given_up = int(conn.scalar(_CODES_GIVEN_UP) or 0)  # among the failed rows only: few, read by the index
        unexpanded = int(conn.scalar(_UNEXPANDED) or 0)
        oldest = conn.execute(_OLDEST_UNSENT).first()
        if unexpanded:  # messages a dispatcher has not expanded yet: pending, and perhaps the oldest of all
            counts[PENDING] = counts.get(PENDING, 0) + unexpanded
            event = conn.execute(_OLDEST_EVENT).first()
            if event is not None and (oldest is None or event.created_at < oldest.created_at):
                oldest = _Oldest(event.id, event.created_at, None)
        return counts, oldest, int(conn.scalar(_RESENDS_IN_DOUBT) or 0), given_up

    counts, oldest, doubtful, given_up = in_snapshot(read)
    return QueueStatus(
        by_status=counts,
        oldest_unsent_id=oldest.id if oldest else None,
        oldest_unsent_age=clock.now() - oldest.created_at if oldest else None,
        resends_in_doubt=doubtful,
        oldest_unsent_error=oldest.last_error if oldest else None,
        codes_given_up=given_up,
    )
