"""A setting given a value the application cannot use stops it at start-up with one line naming the setting: never a
traceback, never a start that fails later. Found by the operations audit: a word for a number was a ValueError
traceback, ``WALLET_ENV=prod`` ran with the development pepper and an open /metrics, a negative
``DISPATCH_INTERVAL_SECONDS`` or a zero ``SMS_BATCH_SIZE`` started a dispatcher that never sent anything, and a rate
limit the limiter could not parse switched that limit off (flask-limiter logs an error per request and lets it
through)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("name", "value"), [
    ("ARGON2_TIME_COST", "two"),
    ("ACCESS_TOKEN_MINUTES", "15m"),
    ("DISPATCH_INTERVAL_SECONDS", "half a second"),
    ("DISPATCH_INTERVAL_SECONDS", "-1"),
    ("DISPATCH_INTERVAL_SECONDS", "0"),
    ("DISPATCH_INTERVAL_SECONDS", "nan"),
    ("ESCROW_SWEEP_SECONDS", "0"),
    ("LEDGER_CHECK_SECONDS", "-600"),
    ("SMS_BATCH_SIZE", "0"),
    ("SMS_LEASE_SECONDS", "-60"),
    ("LIMIT_PER_TRANSACTION", "-1"),
    ("LIMIT_DAILY", "0"),
    ("MAX_CONTENT_LENGTH", "-5"),
    ("PROXY_FIX_X_FOR", "-1"),
    ("ESCROW_PAY_HOURS", "-24"),
    ("RATELIMIT_ENABLED", "maybe"),
    ("WALLET_ENV", "prod"),
    ("WALLET_ENV", "Production"),
    ("LOG_FORMAT", "jsn"),
    ("LOG_LEVEL", "LOUD"),
    ("DATABASE_URL", "not a url"),
    ("DATABASE_URL", "mysql://root@127.0.0.1/wallet"),
    ("RATELIMIT_STORAGE_URI", "bogus://127.0.0.1"),
    # Found by an audit: storages the limiter knows but the application cannot use (not installed, or async)
    # passed this check and then failed every gunicorn worker's start with a traceback.
    ("RATELIMIT_STORAGE_URI", "async+memory://"),
    ("RATELIMIT_STORAGE_URI", "memcached://127.0.0.1:11211"),
    ("RATELIMIT_STORAGE_URI", "mongodb://127.0.0.1:27017"),
    ("SMS_CODE_RESEND_LIMIT", "lots"),
    ("LOGIN_LIMIT_PER_PHONE", "20 per fortnight"),
])
def test_a_value_the_app_cannot_use_is_refused_naming_the_setting(tmp_path, name, value):
    with pytest.raises(ConfigError) as refused:
        load({name: value}, str(tmp_path))
    message = refused.value.message
    assert name in message and "\n" not in message, message


@pytest.mark.parametrize("url", ["", "sqlite:///instance/wallet.db"])
def test_production_refuses_sqlite(tmp_path, url):
    """DESIGN 8: production is PostgreSQL. It started on SQLite, the empty default included, while the README said
    it would not."""
    settings = {"WALLET_ENV": "production", "PASSWORD_PEPPER": "a test pepper", "DATABASE_URL": url}
    with pytest.raises(ConfigError) as refused:
        load(settings, str(tmp_path))
    assert "DATABASE_URL" in refused.value.message and "\n" not in refused.value.message
    development = load({**settings, "WALLET_ENV": "development"}, str(tmp_path))
    assert development["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
    on_postgres = load({**settings, "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/wallet"}, str(tmp_path))
    assert on_postgres["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")


@pytest.mark.parametrize(("lease", "timeout"), [("30", "120"), ("20", "10"), ("5", "10.0")])
def test_a_lease_that_a_hand_over_could_outlast_is_refused(tmp_path, lease, timeout):
    """Found by an audit: a lease shorter than a hand-over may take gives the alert to another dispatcher, which sends
    it again, and nothing checked the two against each other."""
    with pytest.raises(ConfigError) as refused:
        load({"SMS_LEASE_SECONDS": lease, "SMS_SEND_TIMEOUT_SECONDS": timeout}, str(tmp_path))
    assert "SMS_LEASE_SECONDS" in refused.value.message and "SMS_SEND_TIMEOUT_SECONDS" in refused.value.message
    assert load({"SMS_LEASE_SECONDS": "21", "SMS_SEND_TIMEOUT_SECONDS": "10"}, str(tmp_path))["SMS_LEASE_SECONDS"] == 21


@pytest.mark.parametrize(("name", "value", "parsed"), [
    ("RATELIMIT_ENABLED", "false", False),
    ("RATELIMIT_ENABLED", "ON", True),
    ("LOG_LEVEL", "warning", "WARNING"),
    ("LOG_FORMAT", "json", "json"),
    ("BANK_LATENCY_SECONDS", "0", 0.0),
    ("PROXY_FIX_X_FOR", "0", 0),
    ("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/wallet",
     "postgresql+psycopg://postgres@127.0.0.1:5432/wallet"),
    ("SMS_CODE_LIMIT_PER_PHONE", "5 per hour;10 per day", "5 per hour;10 per day"),
    ("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    # Found by an audit: a token read from a file kept its line break, and no scraper could ever match it.
    ("METRICS_TOKEN", "s3cret\n", "s3cret"),
])
def test_ordinary_values_are_accepted(tmp_path, name, value, parsed):
    config = load({name: value}, str(tmp_path))
    key = "SQLALCHEMY_DATABASE_URI" if name == "DATABASE_URL" else name
    assert config[key] == parsed


def _stderr_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def test_the_flask_command_line_says_which_setting_is_wrong_in_one_line(tmp_path):
    env = {**os.environ, "ARGON2_TIME_COST": "two", "DATABASE_URL": f"sqlite:///{tmp_path / 'wallet.db'}"}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "notifications", "status"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert len(_stderr_lines(done)) == 1 and "ARGON2_TIME_COST" in done.stderr, done.stderr


def test_gunicorn_refuses_to_start_with_one_line_naming_the_setting(tmp_path):
    env = {**os.environ, "DISPATCH_INTERVAL_SECONDS": "-1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--check-config"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert len(_stderr_lines(done)) == 1 and "DISPATCH_INTERVAL_SECONDS" in done.stderr, done.stderr


def test_a_refused_storage_uri_does_not_echo_its_password(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load({"RATELIMIT_STORAGE_URI": "redis+nope://:s3cret-pass@127.0.0.1:6379"}, str(tmp_path))
    assert "RATELIMIT_STORAGE_URI" in refused.value.message and "s3cret" not in refused.value.message


@pytest.mark.parametrize("name, value", [("GUNICORN_THREADS", "two"), ("GUNICORN_THREADS", "0"),
                                         ("GUNICORN_TIMEOUT", "ten"), ("BIND", "")])
def test_gunicorn_refuses_its_own_settings_with_one_line_naming_them_too(tmp_path, name, value):
    env = {**os.environ, name: value, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--check-config"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert len(_stderr_lines(done)) == 1 and name in done.stderr, done.stderr
