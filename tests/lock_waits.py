"""Knowing that a thread waits on a database lock, instead of sleeping and hoping it got there.

A race test pauses one transaction while it holds its locks, starts a second, and must know what the second does
before letting the first go: queue on a lock, or finish without one. Joining the second for half a second told
neither on a busy machine: a second not yet at its lock looked like one queued on it, and one still at work looked
like one that waited. On PostgreSQL the server says when a backend waits on a lock (``pg_stat_activity``); the test
database is the test's own, so a backend of it waiting on a lock while the first is paused is the second.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.conftest import PG_URL

# Only a thread that is truly stuck (neither waiting on a lock nor finishing) takes this long.
PATIENCE = 60.0

_WAITING = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")


def waits_on_a_lock(thread: threading.Thread, timeout: float = PATIENCE) -> bool:
    """Whether ``thread`` ends up waiting on a database lock: True as soon as PostgreSQL shows a backend of the test
    database waiting on one, False as soon as the thread has finished without. On SQLite, whose writers wait for
    the database inside the driver, out of sight, whether the thread is still running after ``timeout``; and on
    either, a thread still running after ``timeout`` counts as waiting."""
    if not PG_URL:
        thread.join(timeout)
        return thread.is_alive()
    engine = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), poolclass=NullPool)
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while thread.is_alive() and time.monotonic() < deadline:
                if conn.execute(_WAITING).scalar_one():
                    return True
                conn.rollback()  # the activity view is a snapshot per transaction: a fresh one for each look
                thread.join(0.01)
    finally:
        engine.dispose()
    return thread.is_alive()
