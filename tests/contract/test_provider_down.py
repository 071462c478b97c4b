"""Acceptance 2: Twilio (the Prism mock) goes down while alerts are being written; 200 alerts; it comes back.
Every alert reaches it exactly once, and the transactions that wrote the alerts never waited on it."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable

from sqlalchemy import func, select

from app import create_app
from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.models import SENT, Alert, AlertEvent
from notifications.outbox import enqueue
from tests.conftest import empty_all_tables
from tests.contract.conftest import RecordingHttpClient, make_sender
from tests.factories import make_phone

ALERTS = 200
OUTAGE_AFTER = 40


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def scalar(stmt):
    value = db.session.scalar(stmt)
    db.session.rollback()
    return value


def test_an_outage_loses_nothing_duplicates_nothing_and_never_holds_up_the_writers(own_prism, database_url, tmp_path):
    http = RecordingHttpClient(own_prism.base_url, timeout=2)
    sender = make_sender(own_prism.base_url, http_client=http)
    app = create_app({
        "DATABASE_URL": database_url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False,
        "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"), "SMS_SENDER": sender,
        # Real time, short retries: the outage lasts seconds, not hours.
        "SMS_BACKOFF_BASE_SECONDS": 0.05, "SMS_BACKOFF_MAX_SECONDS": 0.5, "SMS_BATCH_SIZE": 10,
    })
    with app.app_context():
        empty_all_tables()

    stop = threading.Event()

    def run_dispatcher() -> None:
        with app.app_context():
            dispatcher.run(sender, stop, interval=0.02)
            db.session.remove()

    thread = threading.Thread(target=run_dispatcher)
    thread.start()
    took_up, took_down = [], []
    try:
        with app.app_context():
            for i in range(ALERTS):
                if i == OUTAGE_AFTER:
                    own_prism.stop()
                started = time.perf_counter()
                # Stands for a money movement: its transaction writes the alert and commits.
                run_in_transaction(lambda i=i: enqueue(make_phone(), "transfer_received", locale="en",
                                                       user_id="usr_outage", payer="a friend", amount=i + 1,
                                                       time="now"))
                (took_up if i < OUTAGE_AFTER else took_down).append(time.perf_counter() - started)
                time.sleep(0.005)

            wait_for(lambda: scalar(select(func.count()).select_from(Alert)
                                    .where(Alert.last_error.like("%unreachable%"))) >= 10,
                     "the dispatcher to run into the outage")
            # Alerts not sent, and those still inside events no dispatcher round has expanded yet.
            unsent_during_outage = (scalar(select(func.count()).select_from(Alert).where(Alert.status != SENT))
                                    + scalar(select(func.coalesce(func.sum(AlertEvent.message_count), 0))))
            own_prism.start()
            wait_for(lambda: scalar(select(func.count()).select_from(Alert).where(Alert.status == SENT)) == ALERTS,
                     f"all {ALERTS} alerts sent after the outage")
            statuses = Counter(db.session.scalars(select(Alert.status)))
            bodies = set(db.session.scalars(select(Alert.body)))
            attempts = sum(db.session.scalars(select(Alert.attempts)))
    finally:
        stop.set()
        thread.join(timeout=30)
        with app.app_context():
            db.engine.dispose()

    assert not thread.is_alive()
    assert statuses == {SENT: ALERTS}
    assert unsent_during_outage >= ALERTS - OUTAGE_AFTER, "the outage did not hold anything back"
    assert attempts > ALERTS, "no attempt failed: there was no outage"
    accepted = Counter(exchange.data["Body"] for exchange in http.exchanges if exchange.status == 201)
    assert set(accepted) == bodies, "an alert never reached the provider"
    assert max(accepted.values()) == 1, f"sent twice: {[b for b, n in accepted.items() if n > 1][:3]}"
    # The writers never touched the provider: writing an alert during the outage took what it took before.
    assert max(took_down) < 1.0, f"a write waited {max(took_down):.3f}s during the outage"
    assert statistics.median(took_down) < 3 * statistics.median(took_up) + 0.02, (
        f"median write {statistics.median(took_up) * 1000:.1f} ms before, "
        f"{statistics.median(took_down) * 1000:.1f} ms during the outage"
    )
