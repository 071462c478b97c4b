"""A background thread that runs periodic tasks inside the application (the dev server's workers).

In production the same tasks run as their own processes (``flask notifications dispatch`` ...); this thread
exists so the embedded default needs one command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)


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
        self.stopping = threading.Event()

    def run(self) -> None:
        log.info("background worker started: %s", ", ".join(t.name for t in self.tasks))
        while not self.stopping.is_set():
            for task in self.tasks:
                if time.monotonic() >= task.next_run:
                    self._run_one(task)
                    task.next_run = time.monotonic() + task.every_seconds
            self.stopping.wait(0.1)

    def _run_one(self, task: Task) -> None:
        """Run ``task`` once. A failure is logged when it starts (a bug with its traceback, an unreachable database
        in one line), not again while it lasts, and its end is logged too: one outage, two lines."""
        with self.app.app_context():
            try:
                task.run()
            except OperationalError as exc:  # PostgreSQL restarting or unreachable: nothing to fix in the code
                if not task.failing:
                    log.error("background task %s cannot reach the database (%s); it is retried every %ss, and"
                              " this is logged again when it works", task.name, type(exc.orig).__name__,
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
