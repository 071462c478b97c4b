"""A background task that keeps failing (the database restarting, a bug) is logged once, with what happens next, and
again when it works, not a traceback every round. Found by the operations audit: while PostgreSQL was down,
`flask worker` logged the full OperationalError traceback of `process-withdrawals` every second (and of every other
task every few seconds), and the dev server's SMS dispatch every half second, so the one line that mattered scrolled
away."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy.exc import OperationalError

from core.worker import BackgroundWorker, Task


class Outage(OperationalError):
    def __init__(self) -> None:
        super().__init__("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def _run(outcomes: list[Exception | None], caplog) -> list[logging.LogRecord]:
    """Run one task through ``outcomes`` (an exception to raise, or None to succeed), one per round, and return what
    the worker logged about it."""
    left = list(outcomes)
    worker = BackgroundWorker(Flask(__name__), [])

    def task() -> None:
        outcome = left.pop(0)
        if not left:
            worker.stop()
        if outcome is not None:
            raise outcome

    worker.tasks.append(Task("process-withdrawals", task, 0.0))
    with caplog.at_level(logging.INFO, logger="core.worker"):
        worker.run()
    return [r for r in caplog.records if r.name == "core.worker" and r.getMessage().startswith("background task ")]


def test_a_database_outage_is_one_line_without_a_traceback_not_one_per_round(caplog):
    records = _run([Outage() for _ in range(6)], caplog)
    failures = [r for r in records if r.levelno >= logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is None
    assert "database" in failures[0].getMessage()


def test_a_bug_is_logged_with_its_traceback_once(caplog):
    records = _run([RuntimeError("bug") for _ in range(6)], caplog)
    failures = [r for r in records if r.levelno >= logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is not None


def test_recovery_is_logged_and_the_next_outage_is_logged_again(caplog):
    records = _run([Outage(), Outage(), None, None, Outage(), Outage()], caplog)
    assert [r.levelname for r in records] == ["ERROR", "INFO", "ERROR"], [r.getMessage() for r in records]
