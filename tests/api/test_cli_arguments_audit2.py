"""Operator commands that misled, found by the second operations audit."""

from __future__ import annotations

from tests.api.test_cli_arguments import _clean_failure


def test_a_one_shot_command_whose_database_goes_away_says_so_in_one_line(app, monkeypatch):
    """`flask escrow sweep` (cron) or `flask wallet check` while PostgreSQL restarts: the schema check at the start
    passed, the database went away during the command, and it ended in SQLAlchemy's OperationalError traceback. Now
    as when it cannot be reached at the start: one line, exit 1."""
    from sqlalchemy.exc import OperationalError

    import app as app_module

    class Refused(Exception):
        def __str__(self) -> str:
            return 'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'

    def gone():
        raise OperationalError("SELECT 1", {}, Refused())

    monkeypatch.setattr(app_module.trades, "run_sweep", gone)
    result = app.test_cli_runner().invoke(args=["escrow", "sweep"])
    _clean_failure(result)
    assert "the database cannot be reached" in result.output and "Connection refused" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
