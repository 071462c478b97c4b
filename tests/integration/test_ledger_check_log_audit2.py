"""The periodic ledger check of ``flask worker`` says in its log when the books are wrong. Found by the second
operations audit: a check that found problems stored them for /metrics and logged nothing at all, so an operator
reading the worker's log (or a log pipeline alerting on ERROR) never learnt the ledger was inconsistent."""

from __future__ import annotations

import logging

import app as app_module
from wallet import check_log


def _ledger_task(app):
    return next(task for task in app_module._worker_tasks(app) if task.name == "ledger-check")


def test_a_ledger_check_that_finds_problems_logs_them_as_an_error(app, monkeypatch, caplog):
    monkeypatch.setattr(check_log, "check_invariants", lambda: ["wallet acc_1: cached 500 != recomputed 400"])
    with app.app_context(), caplog.at_level(logging.INFO):
        _ledger_task(app).run()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "acc_1: cached 500 != recomputed 400" in errors[0], errors


def test_a_clean_ledger_check_logs_no_error(app, caplog):
    with app.app_context(), caplog.at_level(logging.INFO):
        _ledger_task(app).run()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
