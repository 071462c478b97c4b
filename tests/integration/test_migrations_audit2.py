"""Migrations audit (second round): what the other migration tests do not cover."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from app import create_app
from core.db import db

ROOT = Path(__file__).resolve().parents[2]


def _waiting_on_locks(engine, at_least: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            waiting = conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                       " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"))
            conn.rollback()  # pg_stat_activity holds still for a transaction
            if waiting >= at_least:
                return
            assert time.monotonic() < deadline, (f"only {waiting} of {at_least} upgrades got to wait",
                                                 conn.execute(text("SELECT datname, wait_event_type, state,"
                                                                   " left(query, 60) FROM pg_stat_activity")).all())
            time.sleep(0.05)


def test_two_instances_upgrading_at_once_both_succeed(scratch_url, tmp_path):
    """The README's production section runs `flask db upgrade` before starting each process; two instances started at
    once (two containers of one deployment) both upgrade. Both read the version before either committed, so both ran
    the same migrations and the second one failed on the first's objects (``column phone_changed_at already exists``,
    ``duplicate key ... pg_type_typname_nsp_index`` on a new database), with a traceback and exit status 1: its
    instance did not start."""
    if not scratch_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: SQLite is one process's file")
    app = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test", "SMS_CONSOLE_FILE": str(tmp_path / "s.jsonl")})
    with app.app_context():
        upgrade(revision="0019")
        db.engine.dispose()
    engine = create_engine(scratch_url)
    env = {**os.environ, "DATABASE_URL": scratch_url, "WALLET_ENV": "test", "LOG_FORMAT": "text",
           "SMS_CONSOLE_FILE": str(tmp_path / "s.jsonl")}
    command = [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"]
    blocker = engine.connect()
    processes = []
    try:
        # Hold the first upgrade inside its transaction (0020 alters ``users``) until the second has started too.
        blocker.execute(text("LOCK TABLE users IN ACCESS SHARE MODE"))
        for started in (1, 2):
            processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True))
            _waiting_on_locks(engine, started)
    finally:
        blocker.rollback()
        blocker.close()
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    try:
        assert [p.returncode for p in processes] == [0, 0], "\n----\n".join(o[-1500:] for o in outputs)
        assert not any("Traceback" in o for o in outputs)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0028"
    finally:
        engine.dispose()
