"""A one-time code's SMS is never sent once the code has expired: the dispatcher gives it up instead (codes audit).

Found by the codes audit: a code SMS that failed during a provider outage was retried like any alert, for up to
``SMS_MAX_AGE_SECONDS`` (a day), and sent when the provider came back, hours after the code expired, still saying
"valid for 10 minutes". The user typed it and was refused.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.models import FAILED, PENDING, REDACTED, SENT, Alert
from notifications.outbox import enqueue
from notifications.sms import SendFailed
from security import codes
from tests.factories import make_phone


class FlakyProvider:
    """Refuses every message (a 503) until ``back`` is True; records what it took, in order."""

    def __init__(self) -> None:
        self.back = False
        self.bodies: list[str] = []
        self.events: list[str] = []

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        if not self.back:
            raise SendFailed("twilio 503 error None: unavailable", permanent=False)
        self.bodies.append(body)
        self.events.append(event)
        return f"SM{uuid.uuid4().hex}"


def alerts_to(phone: str) -> list[Alert]:
    db.session.rollback()
    return list(db.session.scalars(select(Alert).where(Alert.to_phone == phone).order_by(Alert.id)))


def poll(provider: FlakyProvider, clock, *, seconds: float, step: float = 5.0) -> None:
    """A dispatcher polling every ``step`` seconds for ``seconds``."""
    for _ in range(int(seconds / step)):
        dispatcher.dispatch_all(provider)
        clock.advance(seconds=step)


def dispatcher_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == dispatcher.__name__ and r.levelno >= logging.ERROR]


def test_a_code_that_expires_during_an_outage_is_given_up_and_never_sent(app, clock, caplog):
    provider, phone = FlakyProvider(), make_phone()
    with app.app_context(), caplog.at_level(logging.INFO):
        codes.request_code(phone, "register", "en")
        made = clock.now()
        poll(provider, clock, seconds=codes.LIFETIME.total_seconds() + 60)  # the provider is down for 11 minutes
        [alert] = alerts_to(phone)
        assert alert.status == FAILED, "a code that can no longer be used is still waiting to be sent"
        assert "expired" in alert.last_error and alert.body == REDACTED
        assert alert.updated_at <= made + codes.LIFETIME + timedelta(seconds=5), "given up long after the code expired"
        report = dispatcher.queue_status()
        assert report.by_status.get(PENDING, 0) == 0 and report.by_status[FAILED] == 1
        assert report.oldest_unsent_id is None

        provider.back = True
        poll(provider, clock, seconds=3600)
        assert provider.bodies == [], "the expired code was sent once the provider came back"
        assert alerts_to(phone)[0].status == FAILED
    assert dispatcher_errors(caplog) == [], "an expired code is no operator problem"
    assert any(alert.id in r.getMessage() and "expired" in r.getMessage() for r in caplog.records
               if r.name == dispatcher.__name__ and r.levelno == logging.WARNING)

    result = app.test_cli_runner().invoke(args=["notifications", "status"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^pending\s+0$", result.output, re.MULTILINE)
    assert re.search(r"^failed\s+1$", result.output, re.MULTILINE)


def test_a_code_no_dispatcher_tried_before_it_expired_is_not_sent_but_other_alerts_are(app, clock, caplog):
    """Every dispatcher was down: the password alert still goes out however late, the expired code does not."""
    provider, phone = FlakyProvider(), make_phone()
    provider.back = True
    with app.app_context(), caplog.at_level(logging.INFO):
        codes.request_code(phone, "register", "en")
        run_in_transaction(lambda: enqueue(phone, "login_password_changed", locale="en", user_id="usr_test",
                                           time="08:00"))
        clock.advance(codes.LIFETIME + timedelta(seconds=1))
        dispatcher.dispatch_all(provider)
        assert provider.events == ["login_password_changed"]
        code_alert = next(alert for alert in alerts_to(phone) if alert.event == "sms_code")
        assert (code_alert.status, code_alert.body, code_alert.attempts) == (FAILED, REDACTED, 0)
        assert "expired" in code_alert.last_error
    assert dispatcher_errors(caplog) == []


def test_a_code_whose_hand_over_fails_after_it_expired_is_given_up_at_once(app, clock, caplog):
    """A try begun just before the code expired fails (a timeout) just after: no retry, no error in the log."""

    class SlowThenDown:
        def send(self, **_message: str) -> str:
            clock.advance(  # the hand-over took its whole timeout
                seconds=current_app.config["SMS_SEND_TIMEOUT_SECONDS"])
            raise SendFailed("twilio timeout", permanent=False)

    phone = make_phone()
    with app.app_context(), caplog.at_level(logging.INFO):
        codes.request_code(phone, "register", "en")
        clock.advance(codes.LIFETIME - timedelta(seconds=1))
        dispatcher.dispatch_all(SlowThenDown())
        [alert] = alerts_to(phone)
        assert (alert.status, alert.body, alert.attempts) == (FAILED, REDACTED, 1)
        assert "expired" in alert.last_error
    assert dispatcher_errors(caplog) == []


def test_a_code_is_still_sent_when_the_provider_comes_back_before_it_expires(app, clock):
    provider, phone = FlakyProvider(), make_phone()
    with app.app_context():
        codes.request_code(phone, "register", "en")
        poll(provider, clock, seconds=60)
        provider.back = True
        poll(provider, clock, seconds=120)
        [alert] = alerts_to(phone)
        assert alert.status == SENT and len(provider.bodies) == 1
        code = re.search(r"\b\d{6}\b", provider.bodies[0]).group()
        codes.consume_code(phone, "register", code)
