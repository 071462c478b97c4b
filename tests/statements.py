"""What SQL a piece of code sends: for tests that pin a read to its number of statements or their shape."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from sqlalchemy import event

from core import sql
from core.db import db


@contextmanager
def statements_sent(app: Flask) -> Iterator[list[str]]:
    """Every statement sent to the database while the block runs (through SQLAlchemy or ``core.sql``), whitespace
    collapsed."""
    sent: list[str] = []

    def seen(statement: str) -> None:
        sent.append(" ".join(statement.split()))

    def seen_by_sqlalchemy(_conn, _cursor, statement, *_rest) -> None:
        seen(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", seen_by_sqlalchemy)
    sql.listen(seen)
    try:
        yield sent
    finally:
        sql.unlisten(seen)
        event.remove(engine, "before_cursor_execute", seen_by_sqlalchemy)


# How core.sql.Joined's statements begin: two reads (the request's authentication and its read) in one.
JOINED_READS = "WITH lead_ AS MATERIALIZED ("


@contextmanager
def selects_sent(app: Flask) -> Iterator[list[str]]:
    """The reads sent to the database while the block runs (SELECTs, and joined reads), whitespace collapsed."""
    with statements_sent(app) as sent:
        selects: list[str] = []
        yield selects
    selects.extend(s for s in sent if s.upper().startswith("SELECT") or s.startswith(JOINED_READS))
