"""A real ``flask escrow sweep --loop`` stops on SIGTERM or Ctrl-C as ``flask worker`` and ``flask notifications
dispatch`` do: it finishes the trade in hand and exits 0. Found by the second operations audit: it installed no
handler, so SIGTERM (a process manager's stop) killed it wherever it was (exit -15, nothing logged) and Ctrl-C ended
it with click's ``Aborted!`` and exit 1."""

from __future__ import annotations

import os
import signal

import pytest

from tests.cli_processes import run_until_signalled

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_sweep_loop_stops_cleanly_on_a_signal(database_url, tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "ESCROW_"))}
    env.update(DATABASE_URL=database_url, WALLET_ENV="test", ESCROW_SWEEP_SECONDS="0.05", LOG_LEVEL="INFO",
               LOG_FORMAT="text", SMS_CONSOLE_FILE=str(tmp_path / "sms.jsonl"))
    text = run_until_signalled(["escrow", "sweep", "--loop"], env, tmp_path / "sweep.log",
                               lambda log: log.count("closed_unpaid=") >= 3, signum)  # started, and sweeping
    assert "Traceback" not in text
