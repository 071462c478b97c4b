"""`flask escrow sweep --loop` while the database is unreachable logs that once, not a traceback every round. Found by
the operations audit: it logged 'escrow sweep failed; retrying' with the full OperationalError traceback every
ESCROW_SWEEP_SECONDS for as long as PostgreSQL was down."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError


def test_a_sweep_loop_logs_an_outage_once_without_a_traceback(app, monkeypatch, caplog):
    import app as app_module

    rounds: list[int] = []

    def sweep() -> object:
        rounds.append(1)
        if len(rounds) > 5:
            raise SystemExit(0)  # stops the loop: the test has seen five failed rounds
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(app_module.trades, "run_sweep", sweep)
    app.config["ESCROW_SWEEP_SECONDS"] = 0.01
    with caplog.at_level(logging.INFO):
        app.test_cli_runner().invoke(args=["escrow", "sweep", "--loop"])
    assert len(rounds) == 6
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert failures[0].exc_info is None and "database" in failures[0].getMessage()
