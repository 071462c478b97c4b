"""``core.worker.Stop``: what `flask notifications dispatch` and `flask worker` stop on when SIGTERM comes.

They used a ``threading.Event``, set from the signal handler. ``Event.set`` takes the lock that ``Event.wait`` holds
around its own checks, so a SIGTERM arriving while the main thread was between them deadlocked the process: a
dispatcher never exited in CI (``test_dispatcher_processes``), and the loop below hung on most SIGTERMs."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.worker import BackgroundWorker, Stop

ROOT = Path(__file__).resolve().parents[2]

# A loop that waits on a Stop as the dispatcher does (with no pause, to be between checks as often as possible),
# stopped by SIGTERM; then the same again with a new Stop, ``rounds`` times.
CHILD = """
import signal, sys
from core.worker import Stop
for _ in range(int(sys.argv[1])):
    stop = Stop()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    print("ready", flush=True)
    while not stop.is_set():
        stop.wait(0)
    print("stopped", flush=True)
"""


def test_sigterm_stops_a_loop_waiting_on_it_every_time() -> None:
    rounds = 40
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen([sys.executable, "-c", CHILD, str(rounds)], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True) as child:
        reader = threading.Thread(target=lambda: [lines.put(line.strip()) for line in child.stdout], daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            _stop_each_round(child, lines, rounds)
        finally:
            child.kill()
            child.wait()
            reader.join(timeout=10)


def _stop_each_round(child: subprocess.Popen[str], lines: queue.Queue[str], rounds: int) -> None:
    for n in range(rounds):
        assert lines.get(timeout=30) == "ready"
        time.sleep(random.uniform(0, 0.003))
        child.send_signal(signal.SIGTERM)
        try:
            assert lines.get(timeout=10) == "stopped"
        except queue.Empty:
            raise AssertionError(f"SIGTERM {n + 1} of {rounds} did not stop the loop: deadlocked") from None
    assert child.wait(timeout=10) == 0


def test_set_from_another_thread_wakes_a_long_wait() -> None:
    stop = Stop()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert stop.wait(30) is True
    assert time.monotonic() - started < 5


def test_wait_returns_false_once_its_time_is_up_and_true_at_once_when_set() -> None:
    stop = Stop()
    assert stop.wait(0.01) is False
    assert not stop.is_set()
    stop.set()
    stop.set()  # twice is harmless
    assert stop.wait(30) is True
    assert stop.wait(None) is True


def test_the_background_worker_stops_on_one() -> None:
    assert isinstance(BackgroundWorker(None, []).stopping, Stop)  # type: ignore[arg-type]


def test_it_works_when_its_pipe_is_numbered_past_select_s_limit() -> None:
    # ``select`` refuses a descriptor numbered 1024 or more (ValueError); a process with that many files or
    # connections open gets such numbers for a new pipe. Run in a child so its descriptors go with it.
    child = """
import os, resource, threading
from core.worker import Stop
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < 1200:  # room for the descriptors below, where the machine's default is lower
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
while os.pipe()[1] < 1100:
    pass
stop = Stop()
assert stop._read >= 1024, stop._read
assert stop.wait(0.01) is False
threading.Timer(0.05, stop.set).start()
assert stop.wait(30) is True
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
