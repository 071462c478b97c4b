"""The dispatcher against a real database: outcomes, retries, crashes mid-send, lost claims, several dispatchers.

A "dead" dispatcher is simulated by running its first steps (``claim``, ``begin_attempt``, the send) and never
its last; ``test_dispatcher_processes.py`` does the same with real processes and SIGKILL.
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections import Counter, deque
from datetime import timedelta

import pytest
from flask import current_app
from sqlalchemy import event, select

from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.callbacks import StatusReport, record_delivery_status
from notifications.models import DELIVERED, FAILED, PENDING, REDACTED, SENDING, SENT, Alert
from notifications.outbox import enqueue
from notifications.sms import SendFailed, TwilioSmsSender, classify
from tests.contract.conftest import make_sender
from tests.contract.test_twilio_errors import canned_client, legacy_error
from tests.factories import make_phone

_amounts = itertools.count(1)


class RecordingSender:
    """A fake provider: records every message handed to it, and can refuse the next ones."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.bodies: list[str] = []
        self.refusals: deque[SendFailed] = deque()
        self.on_send = None
        self._lock = threading.Lock()

    def refuse_next(self, *errors: SendFailed) -> None:
        self.refusals.extend(errors)

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        with self._lock:
            if self.on_send is not None:
                self.on_send(alert_id)
            if self.refusals:
                raise self.refusals.popleft()
            self.sent.append(alert_id)
            self.bodies.append(body)
            return f"SM{uuid.uuid4().hex}"


def transient(message: str = "twilio 503 error 503: unavailable") -> SendFailed:
    return SendFailed(message, permanent=False)


def make_alerts(n: int, *, event: str = "transfer_received", sensitive: bool = False, expand: bool = True) -> list[str]:
    """``n`` alerts with distinct bodies, in one transaction; their ids in creation order. ``expand``: turn the
    transaction's events into alert rows at once (a dispatcher's first step), rather than leave that to one."""

    def work() -> list[str]:
        ids = []
        for _ in range(n):
            if event == "sms_code":
                alert = enqueue(make_phone(), "sms_code", locale="en", sensitive=True,
                                code="482915", minutes=10, purpose="login")
            else:
                alert = enqueue(make_phone(), event, locale="en", user_id="usr_test", sensitive=sensitive,
                                payer="a friend", amount=next(_amounts), time="now")
            ids.append(alert.id)
        return ids

    ids = run_in_transaction(work)
    if expand:
        dispatcher.expand()  # the events the transaction wrote become the alerts these tests send
    return ids


def load(alert_id: str) -> Alert:
    db.session.rollback()
    alert = db.session.get(Alert, alert_id, populate_existing=True)
    assert alert is not None
    return alert


def lease() -> timedelta:
    return timedelta(seconds=current_app.config["SMS_LEASE_SECONDS"])


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


def test_an_alert_is_handed_over_once_and_recorded_sent(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        assert dispatcher.dispatch_all(sender) == 1
        alert = load(alert_id)
        assert sender.sent == [alert_id]
        assert (alert.status, alert.attempts, alert.sent_at) == (SENT, 1, clock.now())
        assert alert.provider_id and alert.provider_id.startswith("SM")
        assert alert.claim_token is None and alert.in_flight_since is None and alert.resends_in_doubt == 0
        assert dispatcher.dispatch_all(sender) == 0
        assert sender.sent == [alert_id]


def test_a_one_time_code_is_blanked_in_the_outbox_once_sent(app, sender):
    with app.app_context():
        [alert_id] = make_alerts(1, event="sms_code")
        assert "482915" in load(alert_id).body
        dispatcher.dispatch_all(sender)
        assert "482915" in sender.bodies[0]
        assert load(alert_id).body == REDACTED


def test_transient_failures_back_off_exponentially_with_jitter_then_succeed(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(transient(), transient(), transient())
        for attempt, ceiling in [(1, 2), (2, 4), (3, 8)]:
            dispatcher.dispatch_all(sender)
            alert = load(alert_id)
            assert (alert.status, alert.attempts) == (PENDING, attempt)
            assert "503" in alert.last_error
            wait = alert.next_attempt_at - clock.now()
            assert timedelta(seconds=ceiling / 2) <= wait <= timedelta(seconds=ceiling)
            assert dispatcher.dispatch_all(sender) == 0, "retried before its time"
            clock.set(alert.next_attempt_at)
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert (alert.status, alert.attempts, alert.last_error) == (SENT, 4, None)
        assert sender.sent == [alert_id]


@pytest.mark.parametrize("attempts", range(1, 15))
def test_backoff_stays_between_half_and_all_of_the_doubling_ceiling_and_under_the_cap(attempts):
    ceiling = min(600.0, 2.0 * 2 ** (attempts - 1))
    delays = {dispatcher.backoff(attempts, 2.0, 600.0).total_seconds() for _ in range(200)}
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(delays) > 100, "no jitter"


@pytest.mark.parametrize("attempts", [1024, 1025, 10**6])
def test_backoff_never_overflows_however_many_attempts(attempts):
    """Found by an audit: ``2 ** 1024`` is no float, so the 1025th try (legal settings reach it: a 60 s cap with a
    day's maximum age) raised OverflowError out of the dispatcher's round, unrecorded, again and again."""
    assert 300.0 <= dispatcher.backoff(attempts, 2.0, 600.0).total_seconds() <= 600.0


def test_an_alert_no_dispatcher_tried_before_its_maximum_age_is_still_sent_once(app, clock, sender):
    """The maximum age gives up on an alert whose tries keep failing; one held back by an outage of every dispatcher
    is sent when one comes back (an audit asked which: a lost "password changed" alert is the worse harm), and a
    failure after that gives it up at once."""
    app.config["SMS_MAX_AGE_SECONDS"] = 3600
    with app.app_context():
        held, refused = make_alerts(2)
        clock.advance(hours=5)
        sender.refuse_next(transient())
        dispatcher.dispatch_all(sender)
        assert [load(held).status, load(refused).status].count(SENT) == 1
        assert sorted([load(held).status, load(refused).status]) == sorted([SENT, FAILED])
        assert len(sender.sent) == 1


def test_a_permanent_refusal_fails_the_alert_at_once(app, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(SendFailed("twilio 400 error 21211 (invalid 'To' number)", permanent=True))
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert (alert.status, alert.attempts) == (FAILED, 1)
        assert "21211" in alert.last_error
        assert alert.sent_at is None


def test_transient_failures_give_up_at_the_maximum_age_and_say_so(app, clock, sender, caplog):
    app.config["SMS_MAX_AGE_SECONDS"] = 3600
    with app.app_context():
        [alert_id] = make_alerts(1)
        created = load(alert_id).created_at
        deadline = created + timedelta(hours=1)
        sender.refuse_next(*[transient() for _ in range(100)])
        while (alert := load(alert_id)).status == PENDING:
            assert alert.next_attempt_at <= deadline, "a retry was scheduled past the maximum age"
            clock.set(alert.next_attempt_at)
            dispatcher.dispatch_all(sender)
        assert alert.status == FAILED
        assert clock.now() == deadline, "the last try falls on the deadline"
        assert 8 <= alert.attempts <= 20
        assert sender.sent == []
        assert any(r.levelname == "ERROR" and alert_id in r.getMessage() for r in caplog.records)


def _rate_limited_twilio(retry_after: str) -> TwilioSmsSender:
    """The real Twilio sender whose HTTP client answers every request 429 with this ``Retry-After``."""
    client = canned_client(429, legacy_error(429, 20429, "Too Many Requests"), headers={"Retry-After": retry_after})
    return make_sender("", http_client=client)


def test_a_rate_limited_alert_is_tried_again_no_sooner_than_twilio_asks(app, clock):
    with app.app_context():
        [alert_id] = make_alerts(1)
        twilio = _rate_limited_twilio("120")
        dispatcher.dispatch_all(twilio)
        alert = load(alert_id)
        assert (alert.status, alert.attempts) == (PENDING, 1)
        assert "429" in alert.last_error
        assert alert.next_attempt_at == clock.now() + timedelta(seconds=120), "our own backoff would say 1-2s"
        clock.advance(seconds=119)
        assert dispatcher.dispatch_all(twilio) == 0, "retried before Twilio's Retry-After"
        clock.advance(seconds=1)
        sender = RecordingSender()
        dispatcher.dispatch_all(sender)
        assert (load(alert_id).status, sender.sent) == (SENT, [alert_id])


def test_a_retry_after_beyond_the_maximum_age_leaves_the_last_try_at_the_maximum_age(app, clock):
    app.config["SMS_MAX_AGE_SECONDS"] = 3600
    with app.app_context():
        [alert_id] = make_alerts(1)
        deadline = load(alert_id).created_at + timedelta(hours=1)
        twilio = _rate_limited_twilio("86400")
        dispatcher.dispatch_all(twilio)
        alert = load(alert_id)
        assert (alert.status, alert.next_attempt_at) == (PENDING, deadline)
        clock.set(deadline)
        dispatcher.dispatch_all(twilio)
        alert = load(alert_id)
        assert (alert.status, alert.attempts) == (FAILED, 2)


def test_a_retry_after_shorter_than_the_backoff_does_not_hurry_the_retry(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(*[transient() for _ in range(5)], SendFailed("twilio 429 error 20429: Too Many Requests",
                                                                         permanent=False, retry_after=1))
        for _ in range(5):
            dispatcher.dispatch_all(sender)
            clock.set(load(alert_id).next_attempt_at)
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert (alert.status, alert.attempts) == (PENDING, 6)
        assert alert.next_attempt_at - clock.now() >= timedelta(seconds=32), "the sixth backoff is 32-64s"


def test_a_dispatcher_that_died_mid_send_leaves_the_alert_to_be_sent_again_after_its_lease(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        batch = dispatcher.claim(10)
        assert dispatcher.begin_attempt(alert_id, batch.token)
        sender.send(to="+12025550100", body="x", event="e", alert_id=alert_id, created_at="")
        # ... and the dispatcher dies before recording the outcome.
        assert load(alert_id).status == SENDING
        assert dispatcher.dispatch_all(sender) == 0, "taken over while its lease still ran"

        clock.advance(lease() + timedelta(seconds=1))
        assert dispatcher.dispatch_all(sender) == 1
        alert = load(alert_id)
        assert sender.sent == [alert_id, alert_id], "at least once: the outcome was unknown, so it went again"
        assert (alert.status, alert.attempts, alert.resends_in_doubt) == (SENT, 2, 1)


def test_alerts_claimed_but_not_started_by_a_dead_dispatcher_are_sent_without_doubt(app, clock, sender):
    with app.app_context():
        ids = make_alerts(3)
        dispatcher.claim(10)  # ... and dies at once
        clock.advance(lease() + timedelta(seconds=1))
        dispatcher.dispatch_all(sender)
        assert sorted(sender.sent) == sorted(ids)
        assert all(load(i).resends_in_doubt == 0 and load(i).status == SENT for i in ids)


def test_an_alert_in_doubt_is_not_sent_again_when_a_callback_shows_twilio_has_it(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        batch = dispatcher.claim(10)
        assert dispatcher.begin_attempt(alert_id, batch.token)
        # The hand-over reached Twilio, the dispatcher died; Twilio's callback names the alert in its URL.
        assert record_delivery_status(StatusReport("SM" + "1" * 32, "sent", None, alert_id))

        clock.advance(lease() + timedelta(seconds=1))
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert sender.sent == []
        assert (alert.status, alert.provider_id, alert.resends_in_doubt) == (SENT, "SM" + "1" * 32, 0)


def lost_answer() -> SendFailed:
    return SendFailed("twilio unreachable: ReadTimeout", permanent=False, in_doubt=True)


def test_a_lost_answer_is_retried_and_counted_as_a_resend_in_doubt(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(lost_answer())
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert alert.status == PENDING and alert.in_flight_since is not None
        clock.set(alert.next_attempt_at)
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert sender.sent == [alert_id]
        assert (alert.status, alert.resends_in_doubt, alert.in_flight_since) == (SENT, 1, None)


def test_a_lost_answer_waits_for_the_delivery_report_as_long_as_a_dead_dispatchers_hand_over(app, clock, sender):
    """Found by an audit: after a read timeout the alert was retried by the backoff, one or two seconds later, so
    the delivery report that proves Twilio has the message (its first one comes when the message leaves Twilio's
    queue, seconds later) almost never arrived in time and the owner got the alert twice. After a dispatcher's
    death the same doubt waits the lease; a lost answer now waits as long."""
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(lost_answer())
        dispatcher.dispatch_all(sender)
        clock.advance(seconds=5)
        dispatcher.dispatch_all(sender)  # a dispatcher polling as usual, five seconds on
        record_delivery_status(StatusReport("SM" + "6" * 32, "sent", None, alert_id))  # Twilio had it after all

        clock.advance(lease())
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert sender.sent == [], "the lost hand-over was sent again before Twilio could say it had it"
        assert (alert.status, alert.provider_id, alert.resends_in_doubt) == (SENT, "SM" + "6" * 32, 0)


def test_a_refused_connection_is_retried_without_doubt(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(transient("twilio unreachable: ConnectionError"))
        dispatcher.dispatch_all(sender)
        clock.set(load(alert_id).next_attempt_at)
        dispatcher.dispatch_all(sender)
        assert (load(alert_id).status, load(alert_id).resends_in_doubt) == (SENT, 0)


def test_a_callback_after_a_lost_answer_stops_the_retry(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        sender.refuse_next(lost_answer())
        dispatcher.dispatch_all(sender)
        assert load(alert_id).status == PENDING
        # Twilio had taken the message after all: its delivery report arrives.
        record_delivery_status(StatusReport("SM" + "2" * 32, "delivered", None, alert_id))
        clock.set(load(alert_id).next_attempt_at)
        dispatcher.dispatch_all(sender)
        alert = load(alert_id)
        assert sender.sent == []
        assert (alert.status, alert.provider_id, alert.resends_in_doubt) == (DELIVERED, "SM" + "2" * 32, 0)


def test_a_dispatcher_whose_claim_was_taken_over_sends_nothing(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        slow = dispatcher.claim(10)
        clock.advance(lease() + timedelta(seconds=1))
        assert dispatcher.dispatch_all(sender) == 1
        assert not dispatcher.begin_attempt(alert_id, slow.token)
        assert sender.sent == [alert_id]


def test_a_late_success_is_recorded_and_stops_the_dispatcher_that_took_over(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        slow = dispatcher.claim(10)
        assert dispatcher.begin_attempt(alert_id, slow.token)
        clock.advance(lease() + timedelta(seconds=1))
        fast = dispatcher.claim(10)
        assert [a.id for a in fast.alerts] == [alert_id]
        dispatcher.record_sent(alert_id, "SM" + "3" * 32)  # the slow one's answer arrives after all
        assert not dispatcher.begin_attempt(alert_id, fast.token)
        alert = load(alert_id)
        assert (alert.status, alert.provider_id, alert.resends_in_doubt) == (SENT, "SM" + "3" * 32, 0)


def test_a_late_success_is_recorded_even_after_the_dispatcher_that_took_over_gave_up(app, clock, sender):
    """Found by an audit: a success that came back after another dispatcher had failed the alert (here at its
    maximum age) was logged and dropped, so the owner saw "failed" and the operator a lost alert, for a message
    Twilio had taken. A success is a fact whoever reports it, as a delivery report already is."""
    with app.app_context():
        [alert_id] = make_alerts(1)
        clock.advance(timedelta(seconds=current_app.config["SMS_MAX_AGE_SECONDS"]) - timedelta(seconds=5))
        slow = dispatcher.claim(10)
        assert dispatcher.begin_attempt(alert_id, slow.token)  # ... and its hand-over hangs past the lease
        clock.advance(lease() + timedelta(seconds=1))
        sender.refuse_next(transient())
        dispatcher.dispatch_all(sender)
        assert load(alert_id).status == FAILED, "taken over past its maximum age and refused: given up"

        dispatcher.record_sent(alert_id, "SM" + "5" * 32)  # the slow hand-over's answer: Twilio has it
        alert = load(alert_id)
        assert (alert.status, alert.provider_id, alert.sent_at) == (SENT, "SM" + "5" * 32, clock.now())
        assert dispatcher.queue_status().by_status.get(FAILED, 0) == 0


def test_a_failure_reported_by_a_dispatcher_that_lost_its_claim_is_ignored(app, clock, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        slow = dispatcher.claim(10)
        assert dispatcher.begin_attempt(alert_id, slow.token)
        clock.advance(lease() + timedelta(seconds=1))
        fast = dispatcher.claim(10)
        dispatcher.record_failure(alert_id, slow.token, SendFailed("21211", permanent=True))
        alert = load(alert_id)
        assert (alert.status, alert.claim_token) == (SENDING, fast.token)


def test_a_delivery_report_that_overtakes_the_recorded_hand_over_is_kept(app, sender):
    with app.app_context():
        [alert_id] = make_alerts(1)
        batch = dispatcher.claim(10)
        assert dispatcher.begin_attempt(alert_id, batch.token)
        record_delivery_status(StatusReport("SM" + "4" * 32, "delivered", None, alert_id))
        dispatcher.record_sent(alert_id, "SM" + "4" * 32)
        alert = load(alert_id)
        assert (alert.status, alert.provider_status) == (DELIVERED, "delivered")


def test_each_outcome_commits_with_the_next_hand_over_so_one_message_at_most_is_in_flight(app, sender):
    """A batch costs one transaction per message besides its claim (and one for the last outcome): each
    outcome is recorded in the transaction that marks the next message in flight, never after it."""
    with app.app_context():
        ids = make_alerts(4)
        seen: list[tuple[set[str], set[str]]] = []

        def look(_alert_id: str) -> None:  # while the message is being handed over
            alerts = [load(alert_id) for alert_id in ids]
            seen.append(({a.id for a in alerts if a.in_flight_since is not None},
                         {a.id for a in alerts if a.status == SENT}))

        sender.on_send = look
        commits: list[object] = []
        listener = lambda *_args: commits.append(1)  # noqa: E731
        event.listen(db.engine, "commit", listener)
        try:
            assert dispatcher.dispatch_once(sender, batch_size=4) == 4
        finally:
            event.remove(db.engine, "commit", listener)
        assert len(sender.sent) == 4
        for n, (in_flight, sent) in enumerate(seen):
            assert in_flight == {sender.sent[n]}  # only the message in hand
            assert sent == set(sender.sent[:n])  # every earlier outcome already committed
        assert len(commits) == 1 + 4 + 1  # the claim, a hand-over each, the last outcome
        assert all(load(alert_id).status == SENT and load(alert_id).in_flight_since is None for alert_id in ids)


def test_stopping_mid_batch_finishes_the_message_in_hand_and_gives_back_the_rest(app, clock, sender):
    with app.app_context():
        ids = make_alerts(5)
        stop = threading.Event()
        sender.on_send = lambda _alert_id: stop.set()
        assert dispatcher.dispatch_once(sender, batch_size=5, stop=stop) == 5
        assert len(sender.sent) == 1 and sender.sent[0] in ids  # the one in hand when told to stop
        assert load(sender.sent[0]).status == SENT
        for alert_id in set(ids) - set(sender.sent):
            alert = load(alert_id)
            assert (alert.status, alert.claim_token, alert.attempts) == (PENDING, None, 0)
            assert alert.next_attempt_at == clock.now()


class StalledSender(RecordingSender):
    """A provider whose first hand-over hangs until released, then ends with ``late`` (a SID, or a failure)."""

    def __init__(self, late: SendFailed | None) -> None:
        super().__init__()
        self.late, self.hanging, self.release = late, threading.Event(), threading.Event()
        self.hand_overs = 0

    def send(self, **message: str) -> str:
        self.hand_overs += 1
        if not self.hanging.is_set():
            self.hanging.set()
            assert self.release.wait(30)
            if self.late is not None:
                raise self.late
        return super().send(**message)


@pytest.mark.parametrize("late", [None, SendFailed("twilio 400 error 21211: invalid", permanent=True),
                                  transient(), lost_answer()], ids=["success", "permanent", "transient", "lost"])
def test_a_dispatcher_stalled_past_its_lease_never_writes_over_the_one_that_took_its_batch(app, clock, late):
    """Two dispatcher threads: the first claims a batch and hangs in its first hand-over past SMS_LEASE_SECONDS;
    the second takes the whole batch over and sends it. Whatever the first one's hand-over ends with, it only
    adds what is true (a success: Twilio has the message), never undoes the second's outcome, and sends nothing
    more of the batch it lost."""
    with app.app_context():
        ids = make_alerts(3)
    stalled, fast = StalledSender(late), RecordingSender()

    def first() -> None:
        with app.app_context():
            dispatcher.dispatch_once(stalled, batch_size=3)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert stalled.hanging.wait(30)
        with app.app_context():
            clock.advance(lease() + timedelta(seconds=1))
            assert dispatcher.dispatch_all(fast) == 3
    finally:
        stalled.release.set()
        thread.join(30)
    assert not thread.is_alive()

    with app.app_context():
        alerts = {alert_id: load(alert_id) for alert_id in ids}
        assert sorted(fast.sent) == sorted(ids), "the second dispatcher sent the whole batch"
        assert stalled.hand_overs == 1, "the first sent nothing more of the batch it had lost"
        assert all(a.status == SENT and a.claim_token is None and a.in_flight_since is None for a in alerts.values())
        assert sum(a.resends_in_doubt for a in alerts.values()) == 1, "only the hand-over that hung was in doubt"


class MeetingSender(RecordingSender):
    """Holds each thread's first hand-over until every other thread has reached its own, so that the dispatchers
    hold claimed batches at the same time whatever the scheduler does. Without it one thread could drain the queue
    before the other claimed anything (seen once on SQLite in CI: 1000 to 0), and the test would prove nothing
    about two at once. A claim that kept the other dispatcher waiting until the batch was sent breaks the meeting
    (30 s), and the test fails."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.meeting = threading.Barrier(parties, timeout=30)
        self.arrived: set[int] = set()

    def send(self, **message: str) -> str:
        me = threading.get_ident()
        if me not in self.arrived:
            self.arrived.add(me)
            self.meeting.wait()
        return super().send(**message)


def test_two_dispatcher_threads_send_1000_alerts_exactly_once(app):
    sender = MeetingSender(2)
    with app.app_context():
        ids = make_alerts(1000)
    start = threading.Barrier(2)
    claimed: dict[str, int] = {}

    def worker(name: str) -> None:
        with app.app_context():
            start.wait()
            claimed[name] = dispatcher.dispatch_all(sender, batch_size=20)
            db.session.remove()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)

    counts = Counter(sender.sent)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, f"sent twice: {[a for a, n in counts.items() if n > 1][:5]}"
    assert not sender.meeting.broken, "the two dispatchers never had a batch each at the same time"
    assert claimed["one"] > 0 and claimed["two"] > 0, f"one dispatcher did all the work: {claimed}"
    with app.app_context():
        statuses = Counter(db.session.scalars(select(Alert.status)))
        assert statuses == {SENT: 1000}


def test_status_reports_depth_by_status_and_the_oldest_unsent_alert(app, clock, sender):
    with app.app_context():
        make_alerts(3)
        clock.advance(seconds=90)
        sender.refuse_next(SendFailed("invalid", permanent=True))
        dispatcher.dispatch_once(sender, batch_size=1)
        report = dispatcher.queue_status()
        assert report.by_status == {FAILED: 1, PENDING: 2}
        assert report.oldest_unsent_age == timedelta(seconds=90)

    result = app.test_cli_runner().invoke(args=["notifications", "status"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^pending\s+2$", result.output, re.MULTILINE)
    assert re.search(r"^failed\s+1$", result.output, re.MULTILINE)
    assert "oldest unsent: 90s" in result.output


def test_with_wrong_credentials_every_alert_is_held_and_the_status_report_says_why(app, clock, sender):
    """Wrong credentials (Twilio 20003, HTTP 401) fail no alert: each is retried until its maximum age, so fixing
    the credential loses nothing. Found by an audit: nothing said why the queue grew (no log line for a retried
    failure, only the depth and age in the report) until the first alert was given up a day later."""
    with app.app_context():
        ids = make_alerts(3)
        sender.refuse_next(*(classify(401, 20003, "Authenticate") for _ in ids))
        dispatcher.dispatch_all(sender)
        assert {load(i).status for i in ids} == {PENDING}

    result = app.test_cli_runner().invoke(args=["notifications", "status"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^pending\s+3$", result.output, re.MULTILINE)
    assert re.search(r"^failed\s+0$", result.output, re.MULTILINE)
    assert "last error of the oldest unsent: twilio 401 error 20003: Authenticate" in result.output


def test_dispatch_once_from_the_command_line_sends_what_is_due(app, inbox):
    with app.app_context():
        make_alerts(4)
    result = app.test_cli_runner().invoke(args=["notifications", "dispatch", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output == "sent 4, refused 0, in doubt 0 (of 4 claimed)\n"
    assert len(inbox.messages()) == 4


@pytest.mark.parametrize(("how", "said"), [("permanent", "refused 3, in doubt 0"),
                                           ("transient", "refused 3, in doubt 0"),
                                           ("no answer", "refused 0, in doubt 3")])
def test_dispatch_once_does_not_call_sent_what_the_provider_refused(app, sender, how, said):
    """Found by an audit: the command printed the alerts it had claimed as "sent 3" while Twilio refused all three."""
    with app.app_context():
        make_alerts(3)
    sender.refuse_next(*(SendFailed("twilio 400 error 21211: invalid 'To'", permanent=how == "permanent",
                                    in_doubt=how == "no answer") for _ in range(3)))
    app.extensions["sms_sender"] = sender
    result = app.test_cli_runner().invoke(args=["notifications", "dispatch", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"sent 0, {said} (of 3 claimed)",
                                          "the others are retried or failed: see `flask notifications status`"]
    with app.app_context():
        assert dispatcher.queue_status(totals=True).by_status == {FAILED if how == "permanent" else PENDING: 3}


@pytest.mark.parametrize("expanded_before", ["the event count", "the look for the oldest event"])
def test_the_status_adds_up_its_reads_in_one_snapshot_while_a_dispatcher_expands(app, expanded_before):
    """Found by an audit on PostgreSQL, where a read-only block reads in autocommit: a dispatcher expanding events
    between two of the status's reads made three waiting alerts count in neither the alerts nor the events
    ("pending 0", and yet an oldest unsent one), or the oldest unsent vanish. On SQLite one read sees one snapshot
    anyway; the test runs on both."""
    marker = {"the event count": "alert_events.message_count",
              "the look for the oldest event": "ORDER BY alert_events.id"}
    with app.app_context():
        make_alerts(3, expand=False)
        expanded = []

        def expand_meanwhile(_conn, _cursor, statement, *_rest):
            if marker[expanded_before] in statement and not expanded:
                expanded.append(statement)
                other = threading.Thread(target=lambda: _in_context(app, dispatcher.expand))
                other.start()
                other.join()

        event.listen(db.engine, "before_cursor_execute", expand_meanwhile)
        try:
            report = dispatcher.queue_status(totals=True)
        finally:
            event.remove(db.engine, "before_cursor_execute", expand_meanwhile)
        assert expanded, "the status never read the statement the dispatcher was to come before"
        assert report.by_status.get(PENDING) == 3, report.lines()
        assert report.oldest_unsent_id is not None, report.lines()
        assert dispatcher.queue_status(totals=True).by_status.get(PENDING) == 3  # expanded by now, and still waiting


def _in_context(app, fn):
    with app.app_context():
        return fn()


def test_messages_still_inside_events_count_as_pending_and_the_oldest_event_is_the_oldest_unsent(app, clock):
    with app.app_context():
        first = make_alerts(2, expand=False)  # one event holding two messages, no dispatcher yet
        clock.advance(seconds=45)
        report = dispatcher.queue_status()
        assert report.by_status == {PENDING: 2}
        assert report.oldest_unsent_age == timedelta(seconds=45) and report.oldest_unsent_id.startswith("evt_")
        make_alerts(1, expand=False)  # a younger event, beside the older alerts once those are expanded
        assert dispatcher.expand(limit=1) == 2  # the oldest event only
        report = dispatcher.queue_status()
        assert report.by_status == {PENDING: 3}
        assert report.oldest_unsent_age == timedelta(seconds=45) and report.oldest_unsent_id == first[0]
