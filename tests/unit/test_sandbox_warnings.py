"""A production deployment on the sandbox partners (console SMS, simulated bank and identity provider) says so
in its log at startup, once per partner; development stays quiet, and a configured partner is not reported."""

from __future__ import annotations

import pytest

from app import create_app


def startup_log(tmp_path, capfd, **config) -> str:
    capfd.readouterr()
    # Production refuses SQLite; the app connects to nothing at start-up, so the database need not exist.
    database = ("postgresql://postgres@127.0.0.1:5432/not_connected" if config.get("WALLET_ENV") == "production"
                else f"sqlite:///{tmp_path / 'wallet.db'}")
    create_app({"DATABASE_URL": database, "PASSWORD_PEPPER": "a test pepper",
                "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"), **config})
    return capfd.readouterr().err  # the log handler writes to stderr


def test_production_on_the_sandbox_partners_says_so(tmp_path, capfd):
    log = startup_log(tmp_path, capfd, WALLET_ENV="production")
    for expected in ("no Twilio credentials", "sandbox bank gateway", "sandbox identity provider"):
        assert log.count(expected) == 1, (expected, log)


@pytest.mark.parametrize("env", ["development", "test"])
def test_development_and_tests_stay_quiet(tmp_path, capfd, env):
    assert "sandbox" not in startup_log(tmp_path, capfd, WALLET_ENV=env)


def test_a_configured_partner_is_not_reported(tmp_path, capfd):
    log = startup_log(tmp_path, capfd, WALLET_ENV="production", BANK_GATEWAY=object())  # stands for a real bank
    assert "bank gateway" not in log and "sandbox identity provider" in log


def test_production_with_rate_limits_counted_in_each_process_says_so(tmp_path, capfd):
    # memory:// counters live in one process: under gunicorn's WEB_CONCURRENCY workers (5 on two cores) a phone
    # number got five times SMS_CODE_LIMIT_PER_PHONE and LOGIN_LIMIT_PER_PHONE, and nothing said so (operations audit).
    assert log_mentions_storage(startup_log(tmp_path, capfd, WALLET_ENV="production"))
    assert not log_mentions_storage(startup_log(tmp_path, capfd, WALLET_ENV="production",
                                                RATELIMIT_STORAGE_URI="redis://127.0.0.1:6379"))
    assert not log_mentions_storage(startup_log(tmp_path, capfd, WALLET_ENV="development"))


def log_mentions_storage(log: str) -> bool:
    return "RATELIMIT_STORAGE_URI" in log
