"""A real ``flask worker`` says in its log that it stopped, as ``flask notifications dispatch`` does ("dispatcher
started" ... "dispatcher stopped"). Found by the followups audit: it logged "background worker started" and then, on
SIGTERM, nothing: an operator reading the log of a worker that is gone could not tell a clean stop from a kill."""

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
def test_a_worker_logs_that_it_stopped_on_a_signal(database_url, tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(DATABASE_URL=database_url, WALLET_ENV="test", LOG_LEVEL="INFO", LOG_FORMAT="text",
               SMS_CONSOLE_FILE=str(tmp_path / "sms.jsonl"))
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while "background worker started" not in log.read_text(errors="replace"):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text(errors="replace")
    assert "background worker stopped" in text, text
    assert text.index("background worker stopped") > text.index("background worker started")
