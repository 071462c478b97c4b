"""A one-time code's SMS is not sent once a newer code went to the same phone (codes audit).

Found by the sms audit (``test_sms_codes_provider_down_audit3.py``): code A is asked for during a provider outage,
the user asks again and gets B (which voids A); B goes out at once, A's retry lands after it, so the phone shows A
last and A is refused. The dispatcher now gives A up as superseded; it never gives up B because of A, and only a
code's message is ever looked at this way.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import timedelta

from sqlalchemy import select

from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.models import FAILED, REDACTED, SENDING, SENT, Alert
from notifications.outbox import enqueue
from notifications.sms import SendFailed
from security import codes
from tests.factories import make_phone


class FlakyProvider:
    """Refuses every message (a 503) until ``back`` is True; records what it took, in order."""

    def __init__(self) -> None:
        self.back = False
        self.taken: list[tuple[str, str, str]] = []  # (to, event, body)

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        if not self.back:
            raise SendFailed("twilio 503 error None: unavailable", permanent=False)
        self.taken.append((to, event, body))
        return f"SM{uuid.uuid4().hex}"

    def codes_to(self, phone: str) -> list[str]:
        return [re.search(r"\b\d{6}\b", body).group() for to, event, body in self.taken
                if to == phone and event == "sms_code"]


def alerts_to(phone: str) -> list[Alert]:
    db.session.rollback()
    return list(db.session.scalars(select(Alert).where(Alert.to_phone == phone).order_by(Alert.id)))


def poll(provider: FlakyProvider, clock, *, seconds: float, step: float = 1.0) -> None:
    for _ in range(int(seconds / step)):
        dispatcher.dispatch_all(provider)
        clock.advance(seconds=step)


# Six tries of a message fail in it, the last no later than 62 s, and the next is not due before 63 s: a code asked
# for at its end is sent before the older one's next try.
OUTAGE = 62.5


def outage_then_codes(provider: FlakyProvider, clock, first: str, second: str) -> None:
    """Code for ``first`` asked for while the provider is down; when it is back, one for
    ``second`` (the user asks again); then five minutes of a dispatcher polling every second."""
    codes.request_code(first, "register", "en")
    poll(provider, clock, seconds=OUTAGE, step=0.5)
    provider.back = True
    codes.request_code(second, "register", "en")
    poll(provider, clock, seconds=300)


def test_a_code_a_newer_one_replaced_is_given_up_not_sent_after_it(app, clock, caplog):
    provider, phone = FlakyProvider(), make_phone()
    with app.app_context(), caplog.at_level(logging.INFO):
        outage_then_codes(provider, clock, phone, phone)
        assert len(provider.codes_to(phone)) == 1, f"the phone got {provider.codes_to(phone)}"
        codes.consume_code(phone, "register", provider.codes_to(phone)[-1])
        first, second = alerts_to(phone)
        assert (first.status, first.body) == (FAILED, REDACTED) and "superseded" in first.last_error
        assert second.id in first.last_error
        assert second.status == SENT
        report = dispatcher.queue_status()
        assert report.oldest_unsent_id is None and report.by_status == {FAILED: 1}
    # Giving it up is the user's own doing, no operator's problem (the outage's failed tries are: each is a warning).
    assert not [r for r in caplog.records if r.name == dispatcher.__name__ and r.levelno >= logging.WARNING
                and first.id in r.getMessage() and r.msg != dispatcher.RETRY_LOGGED]


def test_codes_that_waited_for_a_dispatcher_go_out_oldest_first_so_the_last_one_works(app, clock):
    """Every dispatcher was down while the user asked twice: both are sent when one comes back, the newer last."""
    provider, phone = FlakyProvider(), make_phone()
    provider.back = True
    with app.app_context():
        codes.request_code(phone, "register", "en")
        clock.advance(seconds=60)
        codes.request_code(phone, "register", "en")
        clock.advance(seconds=60)
        dispatcher.dispatch_all(provider)
        assert len(provider.codes_to(phone)) == 2
        codes.consume_code(phone, "register", provider.codes_to(phone)[-1])
        assert [alert.status for alert in alerts_to(phone)] == [SENT, SENT]


def test_a_newer_code_to_another_phone_supersedes_nothing(app, clock):
    provider, phone, other = FlakyProvider(), make_phone(), make_phone()
    with app.app_context():
        outage_then_codes(provider, clock, phone, other)
        assert len(provider.codes_to(phone)) == 1 and len(provider.codes_to(other)) == 1
        codes.consume_code(phone, "register", provider.codes_to(phone)[0])
        assert [alert.status for alert in alerts_to(phone)] == [SENT]


def test_alerts_that_are_not_codes_neither_supersede_nor_are_superseded(app, clock):
    """A password alert queued during the outage is sent after a newer code, and a newer password alert does not
    stop an older code."""
    provider, phone = FlakyProvider(), make_phone()
    with app.app_context():
        run_in_transaction(lambda: enqueue(phone, "login_password_changed", locale="en", user_id="usr_test",
                                           time="08:00"))
        codes.request_code(phone, "register", "en")
        poll(provider, clock, seconds=OUTAGE, step=0.5)
        run_in_transaction(lambda: enqueue(phone, "payment_password_changed", locale="en", user_id="usr_test",
                                           time="08:01"))
        provider.back = True
        codes.request_code(phone, "register", "en")
        poll(provider, clock, seconds=300)
        events = [event for _to, event, _body in provider.taken]
        assert sorted(events) == ["login_password_changed", "payment_password_changed", "sms_code"]
        assert events.index("sms_code") < events.index("login_password_changed"), "the test needs the old alert late"
        assert [alert.status for alert in alerts_to(phone)] == [SENT, FAILED, SENT, SENT]


def two_claimed_codes(clock) -> tuple[str, dispatcher.Batch, dispatcher.Batch]:
    """Codes A and then B to one number, claimed by two dispatchers: one holds A, the other B."""
    phone = make_phone()
    codes.request_code(phone, "register", "en")
    clock.advance(seconds=60)
    codes.request_code(phone, "register", "en")
    old, new = dispatcher.claim(1), dispatcher.claim(1)
    assert len(old.alerts) == len(new.alerts) == 1 and old.alerts[0].id < new.alerts[0].id
    return phone, old, new


def test_a_code_held_while_another_dispatcher_sends_the_newer_one_is_given_up(app, clock):
    with app.app_context():
        phone, old, new = two_claimed_codes(clock)
        assert dispatcher.begin_attempt(new.alerts[0].id, new.token)
        dispatcher.record_sent(new.alerts[0].id, f"SM{uuid.uuid4().hex}")
        assert not dispatcher.begin_attempt(old.alerts[0].id, old.token)
        first, second = alerts_to(phone)
        assert (first.status, first.attempts, first.body) == (FAILED, 0, REDACTED) and "superseded" in first.last_error
        assert second.status == SENT


def test_the_newer_code_is_never_given_up_because_of_an_older_one_in_flight(app, clock):
    with app.app_context():
        phone, old, new = two_claimed_codes(clock)
        assert dispatcher.begin_attempt(old.alerts[0].id, old.token)
        dispatcher.record_sent(old.alerts[0].id, f"SM{uuid.uuid4().hex}")
        assert dispatcher.begin_attempt(new.alerts[0].id, new.token)
        assert [alert.status for alert in alerts_to(phone)] == [SENT, SENDING]


def test_two_dispatchers_sending_the_old_and_the_new_code_at_once_never_drop_the_new_one(app, clock):
    """Dispatcher one holds code A, dispatcher two the newer B (``FOR UPDATE SKIP LOCKED`` on PostgreSQL); in threads,
    one begins A as the other begins and sends B. B always goes out; A is given up, or at worst sent too."""
    for _ in range(10):
        with app.app_context():
            phone, old, new = two_claimed_codes(clock)
        start = threading.Barrier(2, timeout=30)
        began: dict[str, bool] = {}

        def dispatch(batch: dispatcher.Batch, start=start, began=began) -> None:
            with app.app_context():
                start.wait()
                alert_id = batch.alerts[0].id
                began[alert_id] = dispatcher.begin_attempt(alert_id, batch.token)
                if began[alert_id]:
                    dispatcher.record_sent(alert_id, f"SM{uuid.uuid4().hex}")
                db.session.remove()

        threads = [threading.Thread(target=dispatch, args=(batch,)) for batch in (old, new)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert began[new.alerts[0].id], "the newer code was given up because of the older one"
        with app.app_context():
            first, second = alerts_to(phone)
        assert second.status == SENT
        assert (first.status, "superseded" in (first.last_error or "")) in ((SENT, False), (FAILED, True))
        assert began[old.alerts[0].id] == (first.status == SENT)


def test_a_code_handed_over_before_the_next_was_asked_for_stays_as_it_was(app, clock):
    provider, phone = FlakyProvider(), make_phone()
    provider.back = True
    with app.app_context():
        codes.request_code(phone, "register", "en")
        dispatcher.dispatch_all(provider)
        clock.advance(timedelta(seconds=60))
        codes.request_code(phone, "register", "en")
        dispatcher.dispatch_all(provider)
        assert len(provider.codes_to(phone)) == 2
        assert [alert.status for alert in alerts_to(phone)] == [SENT, SENT]


def test_an_account_holders_login_code_a_newer_one_replaced_is_given_up(app, clock, api):
    """The same for a number with an account, whose codes' messages carry its id."""
    phone = api.register(locale="en")["phone"]
    provider = FlakyProvider()
    with app.app_context():
        codes.request_code(phone, "login")
        poll(provider, clock, seconds=OUTAGE, step=0.5)
        provider.back = True
        codes.request_code(phone, "login")
        poll(provider, clock, seconds=300)
        assert len(provider.codes_to(phone)) == 1, f"the phone got {provider.codes_to(phone)}"
        codes.consume_code(phone, "login", provider.codes_to(phone)[0])
        *_registration, first, second = alerts_to(phone)
        assert first.user_id is not None and first.user_id == second.user_id
        assert (first.status, second.status) == (FAILED, SENT) and "superseded" in first.last_error
