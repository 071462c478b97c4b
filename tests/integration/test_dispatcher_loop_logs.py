"""The dispatcher loop logs a failure that lasts (PostgreSQL down, a bug in a round) when it starts and when it ends,
not every round. Found by the operations audit: `flask notifications dispatch` logged 'cannot reach the database'
every five seconds for as long as PostgreSQL was down, and a failing round's full traceback every five seconds."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import OperationalError

from notifications import dispatcher


def _run(app, monkeypatch, caplog, outcomes: list[Exception | None]) -> list[logging.LogRecord]:
    left, stop = list(outcomes), threading.Event()

    def dispatch_once(sender, batch_size=None, stop_event=None):
        outcome = left.pop(0)
        if not left:
            stop.set()
        if outcome is not None:
            raise outcome
        return 0

    monkeypatch.setattr(dispatcher, "dispatch_once", dispatch_once)
    monkeypatch.setattr(stop, "wait", lambda timeout=None: None)  # no pause between the rounds of this test
    with app.app_context(), caplog.at_level(logging.INFO, logger="notifications.dispatcher"):
        dispatcher.run(object(), stop, interval=0.01)  # type: ignore[arg-type]
    return [r for r in caplog.records if r.name == "notifications.dispatcher" and "started" not in r.getMessage()
            and "stopped" not in r.getMessage()]


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_an_outage_is_logged_once_and_its_end_too(app, monkeypatch, caplog):
    records = _run(app, monkeypatch, caplog, [outage(), outage(), outage(), outage(), None, outage()])
    assert [r.levelname for r in records] == ["ERROR", "INFO", "ERROR"], [r.getMessage() for r in records]
    assert all(r.exc_info is None for r in records)


def test_a_failing_round_is_logged_with_its_traceback_once(app, monkeypatch, caplog):
    records = _run(app, monkeypatch, caplog, [RuntimeError("a bug")] * 5)
    assert len(records) == 1 and records[0].exc_info is not None, [r.getMessage() for r in records]


def test_a_bug_after_an_outage_is_logged_too(app, monkeypatch, caplog):
    records = _run(app, monkeypatch, caplog, [outage(), outage(), RuntimeError("a bug"), RuntimeError("a bug")])
    assert [r.exc_info is not None for r in records] == [False, True], [r.getMessage() for r in records]
