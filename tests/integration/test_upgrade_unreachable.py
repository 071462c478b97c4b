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
def test_upgrading_a_database_that_cannot_be_reached_says_so_in_one_line(tmp_path, url):
    app = create_app({"DATABASE_URL": url, "WALLET_ENV": "test", "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    result = app.test_cli_runner().invoke(db_commands, ["upgrade"])
    with app.app_context():
        db.engine.dispose()
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), f"the command crashed with {result.exception!r}"
    assert "the database cannot be reached" in result.output, result.output
