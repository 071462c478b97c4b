"""A failed try that will be retried is logged (found by the logs audit): with a wrong Twilio auth token or during an
outage every try failed in silence, and the first line an operator saw was a one-time code given up ten minutes
later, or an alert given up after SMS_MAX_AGE_SECONDS (a day)."""

from __future__ import annotations

import logging

from notifications import dispatcher
from notifications.models import PENDING
from tests.integration.test_dispatcher import load, make_alerts, sender, transient  # noqa: F401 - the fixture


def test_a_failed_try_to_be_retried_is_a_warning_naming_the_alert_and_the_error(app, clock, sender, caplog):  # noqa: F811
    with app.app_context(), caplog.at_level(logging.INFO, logger="notifications.dispatcher"):
        [alert_id] = make_alerts(1)
        sender.refuse_next(transient("twilio 401 error 20003: Authenticate"))
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert alert.status == PENDING and alert.next_attempt_at > clock.now()
    [line] = [r for r in caplog.records if alert_id in r.getMessage()]
    assert line.levelname == "WARNING"
    assert "attempt 1 failed" in line.getMessage() and "20003: Authenticate" in line.getMessage()
    assert alert.next_attempt_at.isoformat(timespec="seconds") in line.getMessage()
