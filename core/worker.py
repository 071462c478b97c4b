"""A background thread that runs periodic tasks inside the application (the dev server's workers).

In production the same tasks run as their own processes (``flask notifications dispatch`` ...); this thread
exists so the embedded default needs one command.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from sqlalchemy.exc import OperationalError

from core.db import driver_reason

log = logging.getLogger(__name__)


class Stop:
    """A request to stop a loop that a signal handler may make, like ``threading.Event`` but without its lock.

    ``Event.wait`` holds the lock of its condition around its own checks, and ``Event.set`` takes that lock: a
    SIGTERM handler calling ``set`` while the main thread was between those checks waited for ever on a lock its
    own thread held. A ``flask notifications dispatch`` never exited on SIGTERM in CI this way, and a loop of
    ``Event.wait(0)`` hung on 60 of 100 SIGTERMs. Here ``set`` assigns a flag and writes a byte to a pipe, and
    ``wait`` sleeps in ``poll`` on that pipe: no lock anywhere, from a handler or from another thread. ``poll``,
    not ``select``: ``select`` refuses a descriptor numbered 1024 or more, which a process with many files or
    connections open gets for its pipe."""

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        weakref.finalize(self, _close, self._read, self._write)

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(BlockingIOError):  # a full pipe holds earlier wake-ups, which do the same
            os.write(self._write, b"\0")  # never drained: once set, every wait returns at once

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout`` seconds have passed; whether it is set."""
        if not self._set:
            poller = select.poll()  # one per wait: a poll object refuses two threads polling it at once
            poller.register(self._read, select.POLLIN)
            # poll takes at most 2**31 - 1 ms (24.8 days): a longer wait returns then, as a timeout (found by an audit:
            # OverflowError, which stopped a dispatcher whose DISPATCH_INTERVAL_SECONDS was a month)
            poller.poll(None if timeout is None else min(max(0, math.ceil(timeout * 1000)), 2**31 - 1))
        return self._set


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


@dataclass
class Task:
    name: str
    run: Callable[[], object]
    every_seconds: float
    next_run: float = 0.0
    failing: bool = False  # its last run failed, and that was logged


class BackgroundWorker(threading.Thread):
    def __init__(self, app: Flask, tasks: list[Task]) -> None:
        super().__init__(name="wallet-worker", daemon=True)
        self.app, self.tasks = app, tasks
        self.stopping = Stop()  # set by `flask worker`'s SIGTERM handler

    def run(self) -> None:
        log.info("background worker started: %s", ", ".join(t.name for t in self.tasks))
        while not self.stopping.is_set():
            for task in self.tasks:
                if time.monotonic() >= task.next_run:
                    self._run_one(task)
                    task.next_run = time.monotonic() + task.every_seconds
            self.stopping.wait(0.1)
        # As the dispatcher does: a log that ends without it was killed, not stopped (found by the followups audit).
        log.info("background worker stopped")

    def _run_one(self, task: Task) -> None:
        """Run ``task`` once. A failure is logged when it starts (a bug with its traceback, an unreachable database
        in one line), not again while it lasts, and its end is logged too: one outage, two lines."""
        with self.app.app_context():
            try:
                task.run()
            except OperationalError as exc:  # PostgreSQL restarting or unreachable: nothing to fix in the code
                if not task.failing:
                    log.error("background task %s cannot reach the database (%s); it is retried every %ss, and"
                              " this is logged again when it works", task.name, driver_reason(exc),
                              task.every_seconds)
                task.failing = True
                return
            except Exception:  # a failing task must not kill the others
                if not task.failing:
                    log.exception("background task %s failed; it is retried every %ss, and this is logged again"
                                  " when it works", task.name, task.every_seconds)
                task.failing = True
                return
        if task.failing:
            log.info("background task %s works again", task.name)
            task.failing = False

    def stop(self) -> None:
        self.stopping.set()
