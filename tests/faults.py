"""Make the N-th statement (or COMMIT) a piece of code sends fail, once, the way a real failure would.

``FaultInjector`` counts every statement sent through ``core.sql`` (``sql.listen``) and through SQLAlchemy
(``before_cursor_execute`` on every engine), and every COMMIT (the dialect's ``do_commit``). Armed with ``n`` and a
kind, it fails the n-th of them:

* ``db``: a database error that is not retried (``OperationalError``; the API answers 503), before the statement
  is sent;
* ``bug``: a crash in our own code (``Injected``; 500), before the statement is sent;
* ``serial``: a serialization failure (SQLSTATE 40001), which ``core.db`` retries in place;
* ``kill`` (PostgreSQL only): the connection's backend is terminated, as a database restart would, and the
  statement then really fails on the dead connection;
* ``after_commit`` (counts COMMITs only): the n-th COMMIT goes through, then fails as a connection lost during
  COMMIT would, so the caller does not know the outcome (503).

A failed COMMIT is rolled back first and raised as the driver's own error, so SQLAlchemy wraps it as it would a
real one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import OperationalError

import core.db as core_db
from core import sql


class Injected(Exception):
    """Raised by the ``bug`` kind: a crash in our own code, not in the database."""


def _db_error(statement: str, driver_error: type[Exception]) -> OperationalError:
    return OperationalError(statement, None, driver_error("injected fault"))


class FaultInjector:
    """Counts the points a failure can happen at and fails the one it is armed for (see the module docstring)."""

    def __init__(self, admin_url: str = "") -> None:
        self.admin_url = admin_url  # a plain psycopg URL, for ``kill``
        self.n = 0
        self.kind = ""
        self.count = 0
        self.fired = False
        self.fired_at: str | None = None

    def arm(self, n: int, kind: str) -> None:
        """Fail the ``n``-th point from now on with ``kind``."""
        self.n, self.kind, self.count, self.fired, self.fired_at = n, kind, 0, False, None

    def disarm(self) -> None:
        self.n = 0

    @contextmanager
    def installed(self, dialect_cls: type[Dialect]) -> Iterator[FaultInjector]:
        """Listen to every statement and COMMIT while the block runs (unarmed, it lets everything through)."""
        sql.listen(self._on_sql)
        event.listen(Engine, "before_cursor_execute", self._on_sa)
        original_commit = core_db._commit
        core_db._commit = self._wrap_commit(original_commit)
        original_do_commit = dialect_cls.do_commit
        dialect_cls.do_commit = self._wrap_do_commit(original_do_commit)
        try:
            yield self
        finally:
            dialect_cls.do_commit = original_do_commit
            core_db._commit = original_commit
            event.remove(Engine, "before_cursor_execute", self._on_sa)
            sql.unlisten(self._on_sql)

    def _point(self, what: str, driver: Any = None) -> None:
        if not self.n or self.kind == "after_commit":
            return
        self.count += 1
        if self.count != self.n or self.fired:
            return
        self.fired, self.fired_at = True, what[:200]
        if self.kind == "kill":
            self._kill(driver if driver is not None else self._current_driver())
        elif self.kind == "db":
            raise _db_error(what, psycopg.OperationalError)
        elif self.kind == "serial":
            raise _db_error(what, psycopg.errors.SerializationFailure)
        else:
            raise Injected(f"injected fault at point {self.n}: {what[:80]}")

    def _kill(self, driver: Any) -> None:
        """Terminate the backend of ``driver`` (a psycopg connection) and wait until it is gone."""
        pid = driver.info.backend_pid
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(200):
                if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 0:
                    break
                time.sleep(0.005)

    @staticmethod
    def _current_driver() -> Any:
        state = core_db.blocks_if_any()
        bound = state.reading if state.read_only else state.info.get("core.sql.bound")
        return bound.driver

    def _on_sql(self, statement: str) -> None:
        self._point(" ".join(statement.split()))

    def _on_sa(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self._point(" ".join(statement.split()), conn.connection.dbapi_connection)

    def _wrap_do_commit(self, original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        # Our own code cannot crash inside COMMIT, so "bug" fails it as "db" does.
        def do_commit(dialect: Any, dbapi_connection: Any) -> None:
            try:
                # SQLAlchemy hands over its pool's proxy here; ``kill`` needs the psycopg connection behind it.
                self._point("COMMIT", getattr(dbapi_connection, "driver_connection", dbapi_connection))
            except (OperationalError, Injected) as exc:
                dbapi_connection.rollback()
                if dialect.name == "sqlite":
                    raise sqlite3.OperationalError(
                        "database is locked" if self.kind == "serial" else "injected fault at COMMIT") from None
                orig = getattr(exc, "orig", None)
                raise orig if orig is not None else psycopg.OperationalError("injected fault at COMMIT") from None
            original(dialect, dbapi_connection)

        return do_commit

    def _wrap_commit(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        def commit(state: Any) -> None:
            original(state)
            if not self.n or self.kind != "after_commit":
                return
            self.count += 1
            if self.count == self.n and not self.fired:
                self.fired, self.fired_at = True, "after COMMIT"
                exc = _db_error("COMMIT", psycopg.OperationalError)
                exc.during_commit = True  # type: ignore[attr-defined]
                raise exc

        return commit
