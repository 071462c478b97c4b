"""Settings that contradict each other, refused at start-up with one line naming both (README, Configuration)."""

from __future__ import annotations

import pytest

from core.config import load
from tests.unit.test_config_values_audit2 import refused


@pytest.mark.parametrize(("remind", "confirm"), [("10", "10"), ("3", "2"), ("30", "10")])
def test_a_reminder_due_before_the_trade_was_shipped_is_refused(tmp_path, remind, confirm):
    """ESCROW_REMIND_DAYS_BEFORE is how long before auto-confirmation the buyer is reminded. At or beyond
    ESCROW_CONFIRM_DAYS the reminder falls due the moment the goods are shipped (the sweeper's next round texts it
    together with the shipping text), and the buyer is never reminded when the deadline is near: accepted before."""
    message = refused(tmp_path, {"ESCROW_REMIND_DAYS_BEFORE": remind, "ESCROW_CONFIRM_DAYS": confirm})
    assert "ESCROW_REMIND_DAYS_BEFORE" in message and "ESCROW_CONFIRM_DAYS" in message, message


@pytest.mark.parametrize(("remind", "confirm"), [("0", "1"), ("9", "10"), ("3", "10")])
def test_a_reminder_inside_the_confirm_window_is_taken(tmp_path, remind, confirm):
    config = load({"ESCROW_REMIND_DAYS_BEFORE": remind, "ESCROW_CONFIRM_DAYS": confirm}, str(tmp_path))
    assert (config["ESCROW_REMIND_DAYS_BEFORE"], config["ESCROW_CONFIRM_DAYS"]) == (int(remind), int(confirm))
