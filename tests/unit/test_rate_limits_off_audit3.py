"""A production start with the rate limits switched off says so (found by the docs audit: the README calls
``RATELIMIT_ENABLED`` "turned off only in tests", yet ``RATELIMIT_ENABLED=false`` in production started without a word:
no limit on SMS code sends or logins per number or client, and the only line about limits was the one on memory://
counters, as though they counted)."""

from __future__ import annotations

from tests.unit.test_sandbox_warnings import startup_log


def test_production_with_rate_limits_off_says_so(tmp_path, capfd):
    log = startup_log(tmp_path, capfd, WALLET_ENV="production", RATELIMIT_ENABLED="false")
    assert log.count("RATELIMIT_ENABLED") == 1, log
    assert "counted in each process" not in log  # nothing is counted at all


def test_rate_limits_on_or_development_stay_quiet_about_it(tmp_path, capfd):
    assert "RATELIMIT_ENABLED" not in startup_log(tmp_path, capfd, WALLET_ENV="production")
    assert "RATELIMIT_ENABLED" not in startup_log(tmp_path, capfd, WALLET_ENV="development", RATELIMIT_ENABLED="false")
