"""A real ``flask escrow sweep --loop`` stops on SIGTERM or Ctrl-C as ``flask worker`` and ``flask notifications
dispatch`` do: it finishes the trade in hand and exits 0. Found by the second operations audit: it installed no
handler, so SIGTERM (a process manager's stop) killed it wherever it was (exit -15, nothing logged) and Ctrl-C ended
it with click's ``Aborted!`` and exit 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_sweep_loop_stops_cleanly_on_a_signal(database_url, tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "ESCROW_"))}
    env.update(DATABASE_URL=database_url, WALLET_ENV="test", ESCROW_SWEEP_SECONDS="0.05", LOG_LEVEL="INFO",
               LOG_FORMAT="text", SMS_CONSOLE_FILE=str(tmp_path / "sms.jsonl"))
    log = tmp_path / "sweep.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "escrow", "sweep", "--loop"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("closed_unpaid=") < 3:  # started, and sweeping
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert "Traceback" not in log.read_text(errors="replace")
