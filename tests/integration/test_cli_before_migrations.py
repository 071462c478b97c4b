"""Operator commands run against a database the migrations have not been applied to (a fresh PostgreSQL database,
or ``DATABASE_URL`` pointing somewhere new) say to run ``flask --app app db upgrade`` and exit non-zero. Found by the
operations audit: each printed a SQL traceback (``no such table: alerts``, ``relation "users" does not exist``), and
``flask worker`` and ``flask notifications dispatch`` started anyway and logged a traceback (or, on SQLite, "cannot
reach the database") every second or five, forever."""

from __future__ import annotations

import pytest
from click.exceptions import ClickException
from flask_migrate import upgrade
from sqlalchemy import text

from app import create_app
from core.db import db
from core.worker import BackgroundWorker
from notifications import dispatcher
from tests.factories import make_phone


@pytest.fixture
def unmigrated(scratch_url, tmp_path, monkeypatch):
    def started(*_args, **_kwargs):
        raise AssertionError("a long-running command started on a database without tables")

    monkeypatch.setattr(BackgroundWorker, "run", started)
    monkeypatch.setattr(dispatcher, "run", started)
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test",
                      "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    yield app
    with app.app_context():
        db.engine.dispose()


COMMANDS = [
    ["notifications", "status"],
    ["notifications", "dispatch", "--once"],
    ["notifications", "dispatch"],
    ["wallet", "check"],
    ["worker"],
    ["escrow", "sweep"],
    ["escrow", "sweep", "--loop"],
    ["escrow", "verify", "TRADE"],
    ["users", "grant-staff", "PHONE"],
    ["users", "revoke-staff", "PHONE"],
    ["users", "set-fee", "PHONE", "150"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_command_on_an_unmigrated_database_says_to_run_the_migrations(unmigrated, args):
    phone = make_phone()
    result = unmigrated.test_cli_runner().invoke(args=[phone if arg == "PHONE" else arg for arg in args])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit | ClickException), (
        f"the command crashed with {result.exception!r}")
    assert "flask --app app db upgrade" in result.output, result.output


def test_a_database_one_migration_behind_is_named_too(unmigrated):
    with unmigrated.app_context():
        upgrade(revision="0001")
    result = unmigrated.test_cli_runner().invoke(args=["notifications", "status"])
    assert result.exit_code != 0
    assert "flask --app app db upgrade" in result.output, result.output


def test_a_migrated_database_runs_the_command(unmigrated):
    with unmigrated.app_context():
        upgrade()
    result = unmigrated.test_cli_runner().invoke(args=["notifications", "status"])
    assert result.exit_code == 0, result.output


def test_readiness_is_a_503_saying_to_migrate_until_the_migrations_are_applied(unmigrated):
    """/readyz answered ready on a database without tables (it only ran SELECT 1), so a load balancer sent traffic to
    a server whose every request then failed: a 500 with a traceback on PostgreSQL, and on SQLite a 503
    'database_unavailable' that blamed the connection."""
    client = unmigrated.test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503, answer.json
    assert answer.json["code"] == "database_not_migrated"
    assert "flask --app app db upgrade" in answer.json["detail"]
    with unmigrated.app_context():
        upgrade()
    assert client.get("/readyz").json == {"status": "ready"}


def test_a_database_migrated_ahead_of_this_code_still_serves(unmigrated):
    """A rolling deploy applies the next migration while the previous code still serves: that code stays ready."""
    with unmigrated.app_context():
        upgrade()
        db.session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        db.session.commit()
    assert unmigrated.test_client().get("/readyz").json == {"status": "ready"}
    result = unmigrated.test_cli_runner().invoke(args=["notifications", "status"])
    assert result.exit_code == 0, result.output
