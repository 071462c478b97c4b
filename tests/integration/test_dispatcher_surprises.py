"""What an audit found the dispatcher and the delivery reports got wrong, each pinned:

- a sender raising something other than ``SendFailed`` left the rest of its batch claimed and unsent, and ended
  ``flask notifications dispatch``; now that one message is retried as a hand-over of unknown outcome;
- Twilio answering 2xx with a body that is no JSON escaped ``TwilioSmsSender.send`` as a ``JSONDecodeError``;
- an alert whose every answer was lost was failed at its maximum age although a delivery report had proved the
  provider had it, or stayed ``failed`` when the report came after;
- of a message sent twice, an ``undelivered`` report for one copy hid the ``delivered`` report of the other.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from flask import Flask, current_app
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse

from core.db import run_in_transaction
from notifications import dispatcher
from notifications.callbacks import StatusReport, record_delivery_status
from notifications.models import DELIVERED, FAILED, PENDING, REDACTED, SENT, Alert
from notifications.outbox import enqueue
from notifications.sms import SendFailed, TwilioSmsSender
from tests.factories import make_phone
from tests.integration.test_dispatcher import load


def _alert() -> str:
    return run_in_transaction(lambda: enqueue(make_phone(), "payment_password_changed", locale="en",
                                              user_id="usr_1", time="now")).id


def _sid() -> str:
    return "SM" + uuid.uuid4().hex


class OneBrokenSender:
    """Hands every message over, except one whose hand-over raises an error the sender should have wrapped."""

    def __init__(self, broken: str) -> None:
        self.broken, self.sent = broken, []

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        if alert_id == self.broken:
            raise ValueError("unexpected answer from the provider")
        self.sent.append(alert_id)
        return _sid()


def test_a_sender_error_of_one_alert_does_not_hold_up_its_batch(app, clock):
    with app.app_context():
        broken = _alert()
        clock.advance(seconds=1)
        other = _alert()
        sender = OneBrokenSender(broken)
        assert dispatcher.dispatch_once(sender) == 2
        assert sender.sent == [other] and load(other).status == SENT
        retried = load(broken)
        assert (retried.status, retried.attempts) == (PENDING, 1)
        assert retried.in_flight_since is not None  # the next try first looks for a delivery report
        assert "ValueError" in retried.last_error


def test_an_alert_whose_sender_keeps_failing_is_failed_at_its_maximum_age(app, clock):
    app.config["SMS_MAX_AGE_SECONDS"] = 600
    with app.app_context():
        broken = _alert()
        sender = OneBrokenSender(broken)
        for _ in range(100):
            dispatcher.dispatch_all(sender)
            alert = load(broken)
            if alert.status == FAILED:
                break
            clock.set(alert.next_attempt_at)
        assert alert.status == FAILED and alert.created_at + timedelta(seconds=600) <= clock.now()


def test_the_dispatcher_loop_outlives_an_unexpected_error(app, monkeypatch):
    rounds, stop = [], threading.Event()

    def dispatch_once(sender, batch_size=None, stop_event=None):
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("a bug")
        stop.set()
        return 0

    monkeypatch.setattr(dispatcher, "dispatch_once", dispatch_once)
    monkeypatch.setattr(stop, "wait", lambda timeout=None: None)  # no pause between the rounds of this test
    with app.app_context():
        dispatcher.run(object(), stop, interval=0.01)  # type: ignore[arg-type]
    assert len(rounds) == 2


class NotJson(TwilioHttpClient):
    """A proxy's error page, or a truncated answer: 2xx, but no JSON."""

    def request(self, method, url, *args, **kwargs):
        return TwilioResponse(201, "<html><body>Service temporarily unavailable</body></html>")


def test_twilio_answering_2xx_without_json_is_a_failure_in_doubt():
    sender = TwilioSmsSender(account_sid="AC" + "a" * 32, auth_token="t" * 32, from_number="+15005550006",
                             http_client=NotJson())
    with pytest.raises(SendFailed) as raised:
        sender.send(to="+12025550100", body="hello", event="e", alert_id="sms_x", created_at="")
    assert (raised.value.permanent, raised.value.in_doubt) == (False, True)


# --- delivery reports for alerts whose every answer was lost ---------------------------------------------------


class LostAnswers:
    """The provider takes every message, but its answer never arrives: each hand-over is in doubt. ``during`` runs
    while the message is with the provider (its delivery report may overtake the lost answer)."""

    def __init__(self, during=None) -> None:
        self.during = during

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        if self.during is not None:
            self.during(alert_id)
        raise SendFailed("twilio unreachable: ReadTimeout", permanent=False, in_doubt=True)


def _retry_until_settled(app: Flask, clock, sender, alert_id: str) -> Alert:
    for _ in range(100):
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        if alert.status not in (PENDING, "sending"):
            return alert
        clock.set(alert.next_attempt_at)
    raise AssertionError("the alert never settled")


def test_a_report_that_comes_after_the_dispatcher_gave_up_is_the_proof_of_the_hand_over(app, clock):
    app.config["SMS_MAX_AGE_SECONDS"] = 600
    with app.app_context():
        alert_id = _alert()
        assert _retry_until_settled(app, clock, LostAnswers(), alert_id).status == FAILED
        assert record_delivery_status(StatusReport(_sid(), "delivered", None, alert_id))
        alert = load(alert_id)
        assert (alert.status, alert.provider_status) == (DELIVERED, "delivered") and alert.sent_at is not None
        assert dispatcher.queue_status().by_status.get(FAILED, 0) == 0


def test_a_report_that_overtakes_the_last_lost_answer_keeps_the_alert_from_being_failed(app, clock):
    app.config["SMS_MAX_AGE_SECONDS"] = 600
    sid = _sid()

    def report_on_the_last_try(alert_id: str) -> None:
        if clock.now() >= load(alert_id).created_at + timedelta(seconds=600):
            record_delivery_status(StatusReport(sid, "sent", None, alert_id))

    with app.app_context():
        alert_id = _alert()
        alert = _retry_until_settled(app, clock, LostAnswers(report_on_the_last_try), alert_id)
        assert (alert.status, alert.provider_id) == (SENT, sid)
        assert current_app.config["SMS_MAX_AGE_SECONDS"] == 600


@pytest.mark.parametrize("arrived", ["lost copy", "re-sent copy"])
@pytest.mark.parametrize("first_report", ["delivered", "undelivered"])
def test_of_a_message_sent_twice_the_copy_that_arrived_counts(app, clock, arrived, first_report):
    """The first hand-over's answer is lost (Twilio took it as ``lost_sid``), the re-send is ``resent_sid``; one copy
    reaches the phone, the other does not, and their reports come in either order."""
    lost_sid, resent_sid = _sid(), _sid()

    class LostThenAccepted:
        tries = 0

        def send(self, **_message) -> str:
            self.tries += 1
            if self.tries == 1:
                raise SendFailed("twilio unreachable: ReadTimeout", permanent=False, in_doubt=True)
            return resent_sid

    with app.app_context():
        alert_id = _alert()
        sender = LostThenAccepted()
        dispatcher.dispatch_all(sender)
        clock.set(load(alert_id).next_attempt_at)
        dispatcher.dispatch_all(sender)
        sent = load(alert_id)
        assert (sent.status, sent.provider_id, sent.resends_in_doubt) == (SENT, resent_sid, 1)
        delivered_sid, undelivered_sid = (lost_sid, resent_sid) if arrived == "lost copy" else (resent_sid, lost_sid)
        reports = [(delivered_sid, "delivered"), (undelivered_sid, "undelivered")]
        for sid, status in reports if first_report == "delivered" else reversed(reports):
            record_delivery_status(StatusReport(sid, status, None, alert_id))
        alert = load(alert_id)
        assert (alert.status, alert.provider_status) == (DELIVERED, "delivered")


class RefusesForGood:
    def send(self, **_message) -> str:
        raise SendFailed("21211: invalid 'To' number", permanent=True)


def test_a_one_time_code_given_up_leaves_no_live_code_in_the_outbox(app):
    """Also found by the audit: a code was blanked only once sent, so a refused one kept its digits in the row."""
    with app.app_context():
        code_alert = run_in_transaction(lambda: enqueue(make_phone(), "sms_code", locale="en", sensitive=True,
                                                        code="482915", minutes=10, purpose="login")).id
        plain_alert = _alert()
        dispatcher.dispatch_all(RefusesForGood())
        code, plain = load(code_alert), load(plain_alert)
        assert (code.status, code.body) == (FAILED, REDACTED)
        assert plain.status == FAILED and "payment password" in plain.body
