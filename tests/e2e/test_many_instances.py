"""Many instances: two gunicorn instances, two SMS dispatchers and two background workers against one
PostgreSQL, driven by a mixed mobile-client workload spread over both instances (issue 6).

Afterwards: ``flask wallet check`` is clean, every trade's escrow account holds exactly what its amounts say,
every 2xx answer is in the books and every account ends with the balance the answers add up to, no request
was answered 5xx (or not at all), and every alert of the outbox was sent and appears in the shared console
file exactly once.

Runs only with ``WALLET_E2E=1`` (``.ci/e2e.sh`` sets it): it takes about a minute and a half. Knobs:
``WALLET_E2E_SECONDS`` (load duration, default 40), ``WALLET_E2E_THREADS`` (default 6), ``WALLET_E2E_SEED``.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.e2e import harness
from tests.e2e.workload import Workload

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(harness.skip_reason() is not None,
                                                 reason=harness.skip_reason() or "")]

SECONDS = float(os.environ.get("WALLET_E2E_SECONDS", "40"))
THREADS = int(os.environ.get("WALLET_E2E_THREADS", "6"))
SEED = int(os.environ["WALLET_E2E_SEED"]) if os.environ.get("WALLET_E2E_SEED") else None


def test_two_instances_two_dispatchers_two_workers(tmp_path, capsys):
    began = time.monotonic()
    phases = harness.Phases()
    with phases("start"), harness.Stack(tmp_path / "stack") as stack:
        phases.lap("start")
        workload = Workload(stack.urls, stack.sms_file, seed=SEED)
        with phases("load"):
            workload.run(SECONDS, THREADS)
        summary = workload.summary()
        workload.recorder.dump(tmp_path / "requests.jsonl")
        still_running = [name for name, proc in stack.current.items() if not proc.alive()]
        with phases("drain"):
            outbox = harness.wait_outbox_drained(stack, timeout=60)
            withdrawals = harness.wait_withdrawals_settled(stack, timeout=60)
        with phases("checks"):
            checks = harness.end_checks(stack, workload.books)
            alerts = checks.alerts
        phases.begin("stop")
    phases.end("stop")

    figures = {
        **summary,
        "phases_seconds": phases.seconds,
        "trades_by_status": dict(checks.by_status),
        "invariant_checks": checks.invariant_figures(),
        "alerts": {"in outbox": alerts.alerts, "by status": dict(alerts.by_status),
                   "console lines": alerts.console_lines, "delivered exactly once": alerts.delivered_once,
                   "missing": len(alerts.missing), "duplicates": alerts.duplicates,
                   "resends in doubt": alerts.resends_in_doubt, "unmatched lines": alerts.unmatched_lines},
        "withdrawals": dict(withdrawals),
        "outbox at the end": dict(outbox),
        "total_seconds": round(time.monotonic() - began, 1),
        "process logs and requests.jsonl": str(tmp_path),
    }
    with capsys.disabled():
        print("\n== many instances: figures ==\n" + json.dumps(figures, indent=2, ensure_ascii=False))
        print(checks.check_output)
        print(checks.status)

    books = workload.books
    server_errors = workload.recorder.server_errors()
    no_answer = workload.recorder.no_answer()
    checks.assert_books_hold()
    assert not server_errors, [(r.kind, r.status, r.instance) for r in server_errors[:30]]
    assert not no_answer, [(r.kind, r.error, r.instance) for r in no_answer[:30]]
    assert not books.surprises, "\n".join(books.surprises[:30])
    assert not alerts.duplicated, alerts.duplicated
    assert alerts.delivered_once == alerts.alerts == alerts.console_lines
    assert not still_running, f"processes died during the run: {still_running}"
    # The workload really was mixed and really went to both instances.
    kinds = summary["requests_by_kind_and_status"]
    for kind in ("register", "login", "identity", "bind_card", "topup", "transfer", "trade_open", "trade_pay",
                 "trade_ship", "trade_confirm", "refund_request", "refund_agree", "withdrawal"):
        assert kinds.get(kind, {}).get("200", 0) + kinds.get(kind, {}).get("201", 0) \
            + kinds.get(kind, {}).get("202", 0) > 0, f"no successful {kind} in the workload"
    instances = {r.instance for r in workload.recorder.records}
    assert instances == {0, 1}
