"""`flask --app app db upgrade`, the first command of the README's production section, against a database that cannot
be reached (a typo in DATABASE_URL, a database not created yet, PostgreSQL down) says so in one line and exits 1.
Found by the operations audit: it printed a 40-line psycopg/SQLAlchemy traceback."""

from __future__ import annotations

import pytest
from flask_migrate.cli import db as db_commands

from app import create_app
from core.db import db


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/nothing",
                                 "sqlite:////nonexistent-directory/wallet.db"], ids=["refused", "no-such-file"])
def test_upgrading_a_database_that_cannot_be_reached_says_so_in_one_line(tmp_path, url, capsys):
    app = create_app({"DATABASE_URL": url, "WALLET_ENV": "test", "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    result = app.test_cli_runner().invoke(db_commands, ["upgrade"])
    with app.app_context():
        db.engine.dispose()
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), f"the command crashed with {result.exception!r}"
    # Flask-Migrate logs it, through the application's handler, on the standard error it was made with.
    said = [line for line in capsys.readouterr().err.splitlines() if "the database cannot be reached" in line]
    assert len(said) == 1 and "Error: the database cannot be reached" in said[0], said


def test_upgrading_logs_through_the_applications_handler(tmp_path):
    """Found by an audit: alembic.ini's logging configuration replaced the application's handler while migrating,
    so `flask db upgrade` printed the only plain-text lines (no request id) of a JSON-logging deployment."""
    import logging

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'wallet.db'}", "WALLET_ENV": "test", "LOG_FORMAT": "json",
                      "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    root = logging.getLogger()
    handlers = list(root.handlers)
    result = app.test_cli_runner().invoke(db_commands, ["upgrade"])
    with app.app_context():
        db.engine.dispose()
    assert result.exit_code == 0, result.output
    assert root.handlers == handlers
    assert logging.getLogger("alembic").getEffectiveLevel() == logging.INFO  # "Running upgrade ..." is logged
