"""A database outage's log line says why the database cannot be reached, as ``flask notifications dispatch``'s does.
Found by the second operations audit: ``flask worker``, ``flask escrow sweep --loop`` (and the dev server's tasks),
the web's 503 and /metrics logged only the driver's class name, ``(OperationalError)``, which every connection failure
shares: refused, a wrong password, ``too many clients``, a database not accepting connections all read the same."""

from __future__ import annotations

import json
import logging

from flask import Flask
from sqlalchemy.exc import OperationalError

from core.worker import BackgroundWorker, Task

REASON = 'FATAL:  sorry, too many clients already'


class TooManyClients(Exception):
    def __str__(self) -> str:
        return f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {REASON}\nDETAIL: more'


def test_a_background_tasks_outage_line_says_why(caplog):
    worker = BackgroundWorker(Flask(__name__), [])

    def task() -> None:
        worker.stop()
        raise OperationalError("SELECT 1", {}, TooManyClients())

    worker.tasks.append(Task("escrow-sweep", task, 0.0))
    with caplog.at_level(logging.INFO, logger="core.worker"):
        worker.run()
    lines = [r.getMessage() for r in caplog.records if r.name == "core.worker" and r.levelno >= logging.ERROR]
    assert len(lines) == 1 and REASON in lines[0] and "DETAIL" not in lines[0], lines


def test_the_webs_503_and_metrics_say_why_the_database_cannot_be_reached(tmp_path, capfd):
    from app import create_app

    dead = create_app({"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing", "WALLET_ENV": "test",
                       "RATELIMIT_ENABLED": False, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"),
                       "LOG_FORMAT": "json"})
    client = dead.test_client()
    capfd.readouterr()
    assert client.get("/readyz").status_code == 503
    assert client.get("/metrics").status_code == 200
    lines = [json.loads(line)["msg"] for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    unavailable = [line for line in lines if line.startswith("database unavailable")]
    metrics = [line for line in lines if line.startswith("metrics:")]
    assert unavailable and "port 1 failed" in unavailable[0], lines
    assert metrics and "port 1 failed" in metrics[0], lines
