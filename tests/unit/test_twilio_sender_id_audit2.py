"""A Twilio From that Twilio itself takes is accepted at start (found by a review of the From shape check): an
alphanumeric sender id may hold ``+ - _ &`` as well as letters, digits and spaces (Twilio's AlphaSender rules: up to 11
characters, at least one letter), and a short code is sent as its digits without ``+``. The check refused both, so a
platform sending as ``Pay-Alerts`` or from a short code could no longer start after the upgrade."""

from __future__ import annotations

import pytest

from core.config import ConfigError, load

ACCOUNT, TOKEN = "AC" + "0" * 32, "0" * 32


@pytest.mark.parametrize("sender", ["Pay-Alerts", "Tom&Jerry", "My_Wallet", "Wallet+", "894546", "12345"])
def test_a_sender_twilio_takes_is_accepted(tmp_path, sender):
    settings = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM_NUMBER": sender}
    assert load(settings, str(tmp_path))["TWILIO_FROM_NUMBER"] == sender


@pytest.mark.parametrize("sender", ["12025550100", "---", "Pay.Alerts", "Wallet#1"])
def test_a_sender_twilio_refuses_is_still_refused(tmp_path, sender):
    settings = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_FROM_NUMBER": sender}
    with pytest.raises(ConfigError, match="TWILIO_FROM_NUMBER"):
        load(settings, str(tmp_path))
