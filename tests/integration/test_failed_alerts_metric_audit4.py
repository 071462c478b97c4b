"""``/metrics``' failed alerts: what an operator alerts on ("SMS failing") counted one-time code messages the dispatcher
merely gave up, a code that expired unsent or one superseded by a newer code the user asked for; a user who simply
asked again, or a short provider outage, set it off. ``wallet_outbox_alerts{status="failed"}`` now counts the alerts
that failed (a refused number, an alert unsent past its maximum age) and ``wallet_outbox_codes_given_up`` the code
messages given up; ``flask notifications status`` still counts every failed row."""

from __future__ import annotations

from core.db import run_in_transaction
from notifications import dispatcher
from notifications.models import FAILED
from notifications.outbox import enqueue
from notifications.sms import SendFailed
from security import codes
from tests.api.test_observability import sample
from tests.factories import make_phone
from tests.integration.test_sms_codes_expired_audit3 import FlakyProvider, alerts_to, poll


class RefusingProvider:
    """Refuses every message for good (an unreachable number)."""

    def send(self, **_message) -> str:
        raise SendFailed("twilio 400 error 21614: not a mobile number", permanent=True)


def test_a_code_given_up_is_not_a_failed_alert_on_the_metrics_but_a_refused_number_is(app, clock):
    expired_to, refused_to = make_phone(), make_phone()
    with app.app_context():
        codes.request_code(expired_to, "register", "en")
        poll(FlakyProvider(), clock, seconds=codes.LIFETIME.total_seconds() + 60)  # down until the code expired
        assert [alert.status for alert in alerts_to(expired_to)] == [FAILED]

        run_in_transaction(lambda: enqueue(refused_to, "login_password_changed", locale="en", user_id="usr_test",
                                           time="08:00"))
        dispatcher.dispatch_all(RefusingProvider())
        assert [alert.status for alert in alerts_to(refused_to)] == [FAILED]
        assert dispatcher.queue_status().by_status[FAILED] == 2  # the operator's report still counts both

    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert sample(body, 'wallet_outbox_alerts{status="failed"}') == 1.0
    assert sample(body, "wallet_outbox_codes_given_up") == 1.0
