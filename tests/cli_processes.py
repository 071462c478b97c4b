"""A real ``flask`` command in a process of its own, stopped by a signal once its log shows it is at work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_until_signalled(args: list[str], env: dict[str, str], log: Path, ready: Callable[[str], bool],
                        signum: int) -> str:
    """Start ``flask --app app ARGS`` with ``env``, its output into ``log``; once ``ready(log text)`` send ``signum``,
    and assert that it exits 0 within 15 s. Returns the log. SIGINT is left at its default in the child, as a shell
    leaves it for a command in the foreground."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not ready(log.read_text(errors="replace")):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        process.send_signal(signum)
        assert process.wait(timeout=15) == 0, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return log.read_text(errors="replace")
