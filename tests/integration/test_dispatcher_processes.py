"""Real ``flask notifications dispatch`` processes on the test database: several at once, SIGTERM, SIGKILL.

Each process uses the console sender with its own file, so every message handed over is a line on disk
written before the dispatcher records it: a process killed between the two leaves exactly the kind of
duplicate the delivery guarantee allows, and the files let the test count them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.db import db
from notifications.models import SENDING, SENT, Alert, AlertEvent
from tests.integration.test_dispatcher import make_alerts

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 2


class Dispatchers:
    """Starts dispatcher processes against the test database and reads what they sent."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.database_url, self.workdir = database_url, workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.retired: set[int] = set()

    def start(self, batch_size: int = 20) -> subprocess.Popen[bytes]:
        n = len(self.processes)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
        env.update(
            DATABASE_URL=self.database_url,
            WALLET_ENV="test",
            SMS_CONSOLE_FILE=str(self.workdir / f"sent-{n}.jsonl"),
            SMS_LEASE_SECONDS=str(LEASE_SECONDS),
            SMS_SEND_TIMEOUT_SECONDS="0.5",  # the console sender's; the lease must be more than twice it
            SMS_BATCH_SIZE=str(batch_size),
            DISPATCH_INTERVAL_SECONDS="0.05",
            LOG_LEVEL="INFO",  # "dispatcher started" says it is polling (``wait_polling``)
        )
        with (self.workdir / f"dispatcher-{n}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "app", "notifications", "dispatch"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], signum: int) -> int:
        """Send ``signum`` and wait for the exit; its exit code."""
        self.retired.add(process.pid)
        process.send_signal(signum)
        return process.wait(timeout=15)

    def wait_polling(self, *processes: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Wait until ``processes`` (default: every process started so far) are polling the outbox."""
        deadline = time.monotonic() + timeout
        for n in [self.processes.index(p) for p in processes] if processes else range(len(self.processes)):
            log = self.workdir / f"dispatcher-{n}.log"
            while "dispatcher started" not in log.read_text(errors="replace"):
                self.check_alive()
                if time.monotonic() > deadline:
                    pytest.fail(f"dispatcher {n} did not start:\n{self.logs()}")
                time.sleep(0.02)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.pid not in self.retired and process.poll() is not None:
                pytest.fail(f"a dispatcher exited with {process.returncode}:\n{self.logs()}")

    def bodies(self) -> tuple[Counter[str], int]:
        """How often each body was handed over, over every process's file; and torn (partial) lines."""
        counts: Counter[str] = Counter()
        torn = 0
        for path in sorted(self.workdir.glob("sent-*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    counts[json.loads(line)["body"]] += 1
                except json.JSONDecodeError:
                    torn += 1
        return counts, torn

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.workdir.glob("dispatcher-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def dispatchers(database_url: str, tmp_path: Path) -> Iterator[Dispatchers]:
    procs = Dispatchers(database_url, tmp_path)
    yield procs
    procs.stop_all()


def count(*conditions) -> int:
    # End the read at once: on SQLite every transaction takes the write lock (BEGIN IMMEDIATE), and a poll
    # that kept it between two looks would stall the dispatchers.
    value = db.session.scalar(select(func.count()).select_from(Alert).where(*conditions))
    db.session.rollback()
    return value


def in_flight_ids() -> set[str]:
    ids = set(db.session.scalars(select(Alert.id).where(Alert.in_flight_since.is_not(None))))
    db.session.rollback()
    return ids


def wait_until(condition: Callable[[], bool], what: str, procs: Dispatchers, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        procs.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{procs.logs()}")
        time.sleep(0.01)


def bodies_of_all_alerts() -> set[str]:
    # Bodies are read before sending (none of these alerts is a one-time code, so none is blanked).
    return set(db.session.scalars(select(Alert.body)))


def test_two_dispatcher_processes_send_1000_alerts_exactly_once_and_stop_cleanly_on_sigterm(app, dispatchers):
    with app.app_context():
        # Both poll before there is anything to send, so neither has a head start (a process that starts while
        # the other has already sent everything would prove nothing about sharing).
        first, second = dispatchers.start(), dispatchers.start()
        dispatchers.wait_polling()
        # 200 transactions of 5: 200 events, which the two expand into alerts as they go (each event once).
        for _ in range(200):
            make_alerts(5, expand=False)
        wait_until(lambda: count(Alert.status == SENT) == 1000, "1000 sent", dispatchers)
        assert db.session.scalar(select(func.count()).select_from(AlertEvent)) == 0
        expected = bodies_of_all_alerts()
        db.session.rollback()  # SQLite: a read holds the write lock (BEGIN IMMEDIATE), which the dispatchers need
        assert len(expected) == 1000

        assert [dispatchers.stop(p, signal.SIGTERM) for p in (first, second)] == [0, 0], dispatchers.logs()

        counts, torn = dispatchers.bodies()
        assert torn == 0
        assert set(counts) == expected
        assert max(counts.values()) == 1, f"{sum(n - 1 for n in counts.values())} duplicates"
        per_process = [len(path.read_text().splitlines()) for path in sorted(dispatchers.workdir.glob("sent-*"))]
        assert len(per_process) == 2 and min(per_process) > 0, f"one process did all the work: {per_process}"


def test_sigterm_mid_batch_finishes_the_message_in_hand_and_gives_the_rest_back(app, dispatchers):
    with app.app_context():
        # Big enough that the signal lands mid-batch even on a loaded machine: a dispatcher sends a few
        # thousand console messages a second.
        make_alerts(3000)
        process = dispatchers.start(batch_size=2500)
        wait_until(lambda: count(Alert.status == SENT) >= 50, "a first part sent", dispatchers)
        assert dispatchers.stop(process, signal.SIGTERM) == 0, dispatchers.logs()

        sent = count(Alert.status == SENT)
        assert sent < 3000, "the batch was not interrupted; make it bigger"
        assert count(Alert.status == SENDING) == 0, "claimed alerts were kept after a clean stop"
        assert count(Alert.in_flight_since.is_not(None)) == 0
        counts, _ = dispatchers.bodies()
        assert sum(counts.values()) == sent and max(counts.values()) == 1

        dispatchers.start()
        wait_until(lambda: count(Alert.status == SENT) == 3000, "the rest sent by the next dispatcher", dispatchers)
        counts, _ = dispatchers.bodies()
        assert len(counts) == 3000 and max(counts.values()) == 1


def test_dispatchers_killed_with_sigkill_mid_batch_lose_nothing_and_duplicate_only_what_was_in_doubt(
    app, dispatchers, capsys
):
    kills_at = (150, 400, 650)
    with app.app_context():
        make_alerts(1000)
        expected = bodies_of_all_alerts()
        in_doubt_before: set[str] = set()
        new_in_doubt_per_kill = []
        process = dispatchers.start()
        for threshold in kills_at:
            wait_until(lambda t=threshold: count(Alert.status == SENT) >= t, f"{threshold} sent", dispatchers)
            dispatchers.stop(process, signal.SIGKILL)
            # Rows left in flight by earlier kills may still wait for their lease; count only this one's.
            now_in_doubt = in_flight_ids()
            new_in_doubt_per_kill.append(len(now_in_doubt - in_doubt_before))
            in_doubt_before |= now_in_doubt
            process = dispatchers.start()
        wait_until(lambda: count(Alert.status == SENT) == 1000, "all 1000 sent after the kills", dispatchers,
                   timeout=120 + 3 * LEASE_SECONDS)
        # The last kill may come after the earlier process had sent everything (on SQLite the polls above wait
        # for the write lock): then the restarted one is still starting, and a SIGTERM before it has set its
        # handler ends it with -15 (a CI run did). It must be polling first.
        dispatchers.wait_polling(process)
        assert dispatchers.stop(process, signal.SIGTERM) == 0

        counts, torn = dispatchers.bodies()
        resends_in_doubt = db.session.scalar(select(func.sum(Alert.resends_in_doubt)))
        duplicates = sum(n - 1 for n in counts.values())

    assert set(counts) == expected, "an alert was lost"
    # A killed dispatcher has at most one message in flight; only that one can go out twice.
    assert all(n <= 1 for n in new_in_doubt_per_kill), new_in_doubt_per_kill
    assert duplicates <= resends_in_doubt <= len(kills_at)
    assert max(counts.values()) <= 2
    with capsys.disabled():
        print(f"\n[sigkill] kills={len(kills_at)} in_flight_at_kill={new_in_doubt_per_kill} "
              f"resends_in_doubt={resends_in_doubt} duplicates={duplicates} torn_lines={torn}")
