"""Delivery reports from the SMS provider: record what Twilio says happened to a message.

A report names the message (``MessageSid``) and, through the ``alert`` parameter the sender put in the
callback URL, the alert it carries. It is matched by message SID first; the alert id covers a report that
arrives before the dispatcher recorded the SID (and tells the dispatcher that the provider has the message,
so it is not sent again). Statuses only move forward (``models.advance_provider_status``): duplicates,
late and out-of-order reports change nothing.

The signature check happens in ``api.py`` before anything here runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from core import clock
from core.db import db, run_in_transaction
from notifications.models import (
    DELIVERED,
    FAILED,
    PROVIDER_FINAL,
    Alert,
    advance_provider_status,
    status_after_hand_over,
)

log = logging.getLogger(__name__)


def _reached_the_phone(provider_status: str | None) -> bool:
    return PROVIDER_FINAL.get(provider_status or "") == DELIVERED


@dataclass(frozen=True)
class StatusReport:
    message_sid: str
    status: str
    error_code: int | None = None
    alert_id: str | None = None


def record_delivery_status(report: StatusReport) -> bool:
    """Apply ``report`` to its alert; False when no alert matches (the report is then ignored)."""

    def work() -> bool:
        alert = db.session.scalars(
            select(Alert).where(Alert.provider_id == report.message_sid).limit(1).with_for_update()
        ).first()
        if alert is None and report.alert_id:
            alert = db.session.get(Alert, report.alert_id, with_for_update=True)
        if alert is None:
            log.info("delivery report for unknown message %s ignored", report.message_sid)
            return False
        second_copy = alert.provider_id is not None and alert.provider_id != report.message_sid
        if alert.provider_id is None:
            alert.provider_id = report.message_sid
        elif second_copy:
            log.warning("alert %s: report for a second message %s (first %s): it was sent twice",
                        alert.id, report.message_sid, alert.provider_id)
        kept = advance_provider_status(alert.provider_status, report.status)
        sent_twice = second_copy or alert.resends_in_doubt > 0
        if sent_twice and _reached_the_phone(report.status) and not _reached_the_phone(alert.provider_status):
            kept = report.status  # one copy of a message sent twice arrived: that is what the owner got
        if kept == alert.provider_status:
            return True
        alert.provider_status = kept
        if report.error_code is not None:
            alert.provider_error_code = report.error_code
        now = clock.now()
        if alert.sent_at is None and alert.status == FAILED:
            # The dispatcher gave up on a message whose every answer was lost, yet the provider had it all along:
            # the report is the proof of the hand-over.
            log.warning("alert %s: recorded as failed, but the provider reports %s; recorded as handed over",
                        alert.id, report.status)
            alert.sent_at = now
        if alert.sent_at is not None:
            # The hand-over is recorded, so the alert's own status follows the provider's word. Before that,
            # the dispatcher applies it when it records the hand-over.
            alert.status = status_after_hand_over(kept)
        alert.updated_at = now
        return True

    return run_in_transaction(work)
