"""What the suite's hypothesis state machines over the HTTP API share: how many examples they run, and the app they
drive (its own, on the suite's database, with a frozen clock, console SMS to a file and cheap password hashes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask
from hypothesis import HealthCheck, settings

from app import create_app
from core.clock import FrozenClock
from core.db import db
from tests.conftest import empty_all_tables
from tests.documented_errors import assert_none_found, watch


def machine_settings(explore_env: str, examples: int, steps: int) -> settings:
    """Fixed examples by default (a suite that passes passes again, and CI gates landing on it); setting
    ``explore_env`` to a number runs that many fresh random examples (a failure prints its steps)."""
    explore = os.environ.get(explore_env)
    return settings(max_examples=int(explore or examples), stateful_step_count=steps, deadline=None, database=None,
                    derandomize=not explore,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@contextmanager
def machine_app(database_url: str, tmp_path: Path, start: datetime, **config: Any
                ) -> Iterator[tuple[Flask, FrozenClock, Path]]:
    """An app of the machine's own (``config`` on top), its clock and the file its SMS go to; disposed after."""
    clock = FrozenClock(start)
    sms_file = tmp_path / "sms.jsonl"
    app = create_app({
        "DATABASE_URL": database_url, "WALLET_ENV": "test", "CLOCK": clock, "RATELIMIT_ENABLED": False,
        "SMS_CONSOLE_FILE": str(sms_file),
        # Cheap hashes: a machine hashes and verifies hundreds of passwords (DESIGN's floor binds production only).
        "ARGON2_MEMORY_KIB": 1024, "ARGON2_TIME_COST": 1,
        **config,
    })
    watch(app)  # every 4xx problem it answers must be documented for its operation (tests.documented_errors)
    try:
        yield app, clock, sms_file
    finally:
        with app.app_context():
            db.engine.dispose()
    assert_none_found(app)


def fresh_start(app: Flask, clock: FrozenClock, sms_file: Path, start: datetime) -> None:
    """What each example of a machine begins from: the clock at ``start``, no SMS sent, every table empty."""
    clock.set(start)
    sms_file.unlink(missing_ok=True)
    with app.app_context():
        empty_all_tables()
