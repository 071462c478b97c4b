"""A real ``flask worker`` says in its log that it stopped, as ``flask notifications dispatch`` does ("dispatcher
started" ... "dispatcher stopped"). Found by the followups audit: it logged "background worker started" and then, on
SIGTERM, nothing: an operator reading the log of a worker that is gone could not tell a clean stop from a kill."""

from __future__ import annotations

import os
import signal

import pytest

from tests.cli_processes import run_until_signalled

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_worker_logs_that_it_stopped_on_a_signal(database_url, tmp_path, signum):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(DATABASE_URL=database_url, WALLET_ENV="test", LOG_LEVEL="INFO", LOG_FORMAT="text",
               SMS_CONSOLE_FILE=str(tmp_path / "sms.jsonl"))
    text = run_until_signalled(["worker"], env, tmp_path / "worker.log",
                               lambda log: "background worker started" in log, signum)
    assert "background worker stopped" in text, text
    assert text.index("background worker stopped") > text.index("background worker started")
