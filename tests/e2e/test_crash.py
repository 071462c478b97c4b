"""Crash: the many-instances workload while gunicorn masters, SMS dispatchers and background workers are
killed with SIGKILL again and again and started again (issue 6).

Kills, on two chaos threads during the whole load:

* web: the master of one instance (its workers finish the request in hand, notice the orphaning and exit;
  the instance is started again once its port is free), the masters of both instances at once, and the
  whole process group of one instance (master and workers: requests die mid-transaction);
* dispatchers and workers: one of them, SIGKILL, started again at once.

The client resends money POSTs with the same ``Idempotency-Key`` after a lost answer and resolves other
POSTs by reading the state back. Afterwards: every 2xx answer is in the books (transfer ids posted, top-ups
succeeded, withdrawals paid out, trade steps reached) exactly once, every account ends with the balance the
answers add up to, ``flask wallet check`` is clean, every trade's escrow balance agrees with its amounts,
nothing was answered 5xx, and every committed alert was sent; copies in the console file beyond the first are
counted and must stay within the dispatcher's documented bound (``resends_in_doubt`` on the alert).

Runs only with ``WALLET_E2E=1`` (``.ci/e2e.sh`` sets it). Knobs: ``WALLET_E2E_CRASH_SECONDS`` (load
duration, default 60), ``WALLET_E2E_THREADS`` (default 6), ``WALLET_E2E_SEED``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable

import pytest

from tests.e2e import harness
from tests.e2e.workload import Workload

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(harness.skip_reason() is not None,
                                                 reason=harness.skip_reason() or "")]

SECONDS = float(os.environ.get("WALLET_E2E_CRASH_SECONDS", "60"))
THREADS = int(os.environ.get("WALLET_E2E_THREADS", "6"))
SEED = int(os.environ["WALLET_E2E_SEED"]) if os.environ.get("WALLET_E2E_SEED") else None

# Short leases so alerts claimed by a killed dispatcher come back quickly; gunicorn's timeout halved is how
# long an orphaned worker may idle before it notices its master is gone.
CRASH_ENV = {"SMS_LEASE_SECONDS": "5", "SMS_SEND_TIMEOUT_SECONDS": "2", "GUNICORN_TIMEOUT": "10"}
# "Several" kills of each: the load goes on past SECONDS (up to EXTRA_SECONDS) until these are reached.
MINIMUM_KILLS = {"gunicorn master": 3, "gunicorn masters of both instances at once": 1,
                 "gunicorn instance (master and its workers)": 2, "gunicorn worker (its master starts another)": 8,
                 "dispatcher (flask notifications dispatch)": 6, "worker (flask worker)": 3}
EXTRA_SECONDS = 90
# One POST in ten stops waiting for its answer after a fraction of a second (and is then resent with the same
# key, or resolved by reading back): lost answers of committed requests, which kills alone rarely produce.
IMPATIENCE = 0.1


class Chaos:
    """Two threads that kill and restart processes until ``stop`` is set; ``kills`` counts by type."""

    def __init__(self, stack: harness.Stack, seed: int) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills: Counter[str] = Counter()
        self.restart_seconds: list[float] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._guard, args=(self._web,), name="chaos-web", daemon=True),
                        threading.Thread(target=self._guard, args=(self._background,), name="chaos-bg", daemon=True),
                        threading.Thread(target=self._guard, args=(self._web_workers,), name="chaos-ww", daemon=True)]

    def __enter__(self) -> Chaos:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)
        if any(t.is_alive() for t in self.threads):
            self.errors.append("a chaos thread did not stop")

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except Exception:  # reported by the test
            self.errors.append(traceback.format_exc())

    def enough(self) -> bool:
        return all(self.kills[kind] >= n for kind, n in MINIMUM_KILLS.items())

    def _count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.kills[kind] += n

    def _web(self) -> None:
        plan = ["group", "master", "both", "group", "master", "both", "master", "group"]
        step = 0
        self.stop.wait(self.rng.uniform(2, 4))
        while not self.stop.is_set():
            action = plan[step % len(plan)]
            step += 1
            index = self.rng.randrange(2)
            started = time.monotonic()
            if action == "master":
                self.stack.kill(f"web{index}")
                self._count("gunicorn master")
                self.stack.restart_web(index)
            elif action == "both":
                self.stack.kill("web0")
                self.stack.kill("web1")
                self._count("gunicorn master", 2)
                self._count("gunicorn masters of both instances at once")
                restarts = [threading.Thread(target=self.stack.restart_web, args=(i,)) for i in (0, 1)]
                for thread in restarts:
                    thread.start()
                for thread in restarts:
                    thread.join()
                if not all(self.stack.current[f"web{i}"].alive() for i in (0, 1)):
                    raise RuntimeError("an instance did not come back after both masters were killed")
            else:
                self.stack.kill(f"web{index}", whole_group=True)
                self._count("gunicorn instance (master and its workers)")
                self.stack.restart_web(index)
            self.restart_seconds.append(time.monotonic() - started)
            self.stop.wait(self.rng.uniform(0.5, 1.5))

    def _web_workers(self) -> None:
        """SIGKILL one gunicorn worker (its master starts another): the request in hand dies mid-way, which is
        what makes the client resend money POSTs whose first attempt may or may not have committed."""
        self.stop.wait(self.rng.uniform(1, 2))
        while not self.stop.is_set():
            index = self.rng.randrange(2)
            workers = self.stack.web_workers(index) if self.stack.current[f"web{index}"].alive() else []
            if workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.rng.choice(workers), signal.SIGKILL)
                    self._count("gunicorn worker (its master starts another)")
            self.stop.wait(self.rng.uniform(2.0, 5.0))

    def _background(self) -> None:
        # Dispatchers more often: a kill between a hand-over and its record is what makes an in-doubt re-send.
        targets = ["dispatch0", "worker0", "dispatch1", "dispatch0", "worker1", "dispatch1"]
        step = 0
        self.stop.wait(self.rng.uniform(1, 2))
        while not self.stop.is_set():
            name = targets[step % len(targets)]
            step += 1
            kind = "dispatcher" if name.startswith("dispatch") else "worker"
            self.stack.kill(name)
            self._count(f"{kind} (flask {'notifications dispatch' if kind == 'dispatcher' else 'worker'})")
            self.stack.start(kind, int(name[-1]))
            self.stop.wait(self.rng.uniform(2.0, 4.0))


def test_kill_masters_dispatchers_and_workers_under_load(tmp_path, capsys):
    began = time.monotonic()
    phases = harness.Phases()
    with phases("start"), harness.Stack(tmp_path / "stack", env_overrides=CRASH_ENV) as stack:
        phases.lap("start")
        workload = Workload(stack.urls, stack.sms_file, seed=SEED, give_up_after=120, impatience=IMPATIENCE)
        with phases("load"), Chaos(stack, workload.seed) as chaos:
            runner = threading.Thread(target=lambda: workload.run(SECONDS, THREADS), daemon=True)
            runner.start()
            # Chaos lasts as long as the load, which goes on until every kind of kill happened often enough;
            # the stories in progress then finish against a stack at rest.
            load_until, hard_stop = time.monotonic() + SECONDS, time.monotonic() + SECONDS + EXTRA_SECONDS
            while time.monotonic() < load_until or (not chaos.enough() and time.monotonic() < hard_stop):
                workload.stop_at = max(workload.stop_at, time.monotonic() + 2)
                chaos.stop.wait(0.5)
        with phases("settle"):
            runner.join(timeout=400)
            assert not runner.is_alive(), "the workload did not finish"
            restarted = stack.ensure_all_running()
        summary = workload.summary()
        workload.recorder.dump(tmp_path / "requests.jsonl")
        with phases("drain"):
            outbox = harness.wait_outbox_drained(stack, timeout=120)
            withdrawals = harness.wait_withdrawals_settled(stack, timeout=120)
        with phases("checks"):
            pending_topups = stack.query("SELECT count(*) FROM topups WHERE status = 'pending'")[0][0]
            # gunicorn reports each killed worker at ERROR level ("was sent SIGKILL"): that is the chaos itself.
            checks = harness.end_checks(stack, workload.books, log_expected=r"was sent SIGKILL")
            alerts = checks.alerts
        phases.begin("stop")
    phases.end("stop")

    records = workload.recorder
    no_answer = Counter(f"{r.kind}: {r.error}" for r in records.no_answer())
    figures = {
        **summary,
        "phases_seconds": phases.seconds,
        "kills": dict(chaos.kills),
        "process starts": dict(stack.starts),
        "web kill-to-ready seconds": [round(x, 1) for x in chaos.restart_seconds],
        "restarted after the load": restarted,
        "attempts without an answer (connection refused/reset/timeout)": dict(no_answer),
        "trades_by_status": dict(checks.by_status),
        "invariant_checks": checks.invariant_figures(),
        "top-ups left pending (no 2xx; the worker finishes them after a minute)": pending_topups,
        "alerts": {"in outbox": alerts.alerts, "by status": dict(alerts.by_status),
                   "console lines": alerts.console_lines, "delivered exactly once": alerts.delivered_once,
                   "delivered more than once": len(alerts.duplicated), "duplicate copies": alerts.duplicates,
                   "resends in doubt (documented bound)": alerts.resends_in_doubt,
                   "missing": len(alerts.missing), "unmatched lines": alerts.unmatched_lines,
                   "torn lines": alerts.torn_lines},
        "withdrawals": dict(withdrawals),
        "outbox at the end": dict(outbox),
        "log lines with errors": len(checks.log_problems),
        "total_seconds": round(time.monotonic() - began, 1),
        "process logs and requests.jsonl": str(tmp_path),
    }
    with capsys.disabled():
        print("\n== crash: figures ==\n" + json.dumps(figures, indent=2, ensure_ascii=False))
        print(checks.check_output)
        print(checks.status)
        if checks.log_problems:
            print("-- error lines in the process logs (first 40):\n" + "\n".join(checks.log_problems[:40]))
        if workload.books.surprises:
            print("-- surprises:\n" + "\n".join(workload.books.surprises[:40]))

    books = workload.books
    server_errors = records.server_errors()
    assert not chaos.errors, "\n".join(chaos.errors)
    assert chaos.enough(), f"not enough kills: {dict(chaos.kills)}, wanted {MINIMUM_KILLS}"
    checks.assert_books_hold()
    assert not server_errors, [(r.kind, r.status, r.instance) for r in server_errors[:30]]
    assert not books.uncertain, books.uncertain
    assert not books.surprises, "\n".join(books.surprises[:30])
    # Every committed alert was handed over; duplicates only where the dispatcher recorded a re-send in doubt.
    assert not alerts.over_bound, alerts.over_bound[:30]
    assert alerts.duplicates <= alerts.resends_in_doubt
    assert summary["requests"] > 0 and books.trades
