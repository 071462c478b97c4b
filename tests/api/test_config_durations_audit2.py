"""Every duration setting is at most 100 years (of 366 days), not only the escrow ones. Found by the review of
2e07b2d: the cap was put on the ``ESCROW_...`` durations only, and ``REFRESH_TOKEN_DAYS=3000000`` (an operator's "never
expire") still started the application, whose every registration and login then answered 500 (``OverflowError: date
value out of range`` adding the token's lifetime to now). The README: a value the application cannot use stops the
start with one line naming the setting."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load

LONGEST = {"REFRESH_TOKEN_DAYS": 36_600, "ACCESS_TOKEN_MINUTES": 52_704_000, "SMS_RECOVERY_HOLD_HOURS": 878_400,
           "PAYMENT_RESET_AFTER_PHONE_CHANGE_HOURS": 878_400, "IDEMPOTENCY_TTL_HOURS": 878_400,
           "SMS_MAX_AGE_SECONDS": 3_162_240_000, "WITHDRAWAL_MAX_AGE_SECONDS": 3_162_240_000}


@pytest.mark.parametrize("name", sorted(LONGEST))
@pytest.mark.parametrize("past_longest", [1, 3_000_000_000])
def test_a_duration_no_date_can_reach_is_refused_at_start_naming_the_setting(tmp_path, name, past_longest):
    with pytest.raises(ConfigError) as refused:
        load({name: str(LONGEST[name] + past_longest)}, str(tmp_path))
    message = refused.value.message
    assert name in message and "\n" not in message, message


def test_registration_and_login_answer_with_the_longest_token_lifetimes_accepted(api, app, tmp_path):
    longest = load({"REFRESH_TOKEN_DAYS": str(LONGEST["REFRESH_TOKEN_DAYS"]),
                    "ACCESS_TOKEN_MINUTES": str(LONGEST["ACCESS_TOKEN_MINUTES"])}, str(tmp_path))
    app.config.update(REFRESH_TOKEN_DAYS=longest["REFRESH_TOKEN_DAYS"],
                      ACCESS_TOKEN_MINUTES=longest["ACCESS_TOKEN_MINUTES"])
    account = api.register()
    assert account["access_token"]
    logged_in = api.login(account["phone"])
    assert logged_in.status_code == 201, logged_in.json
