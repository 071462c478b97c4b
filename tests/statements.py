"""What SQL a piece of code sends: for tests that pin a read to its number of statements or their shape."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from sqlalchemy import event

from core.db import db


@contextmanager
def selects_sent(app: Flask) -> Iterator[list[str]]:
    """The SELECT statements sent to the database while the block runs, whitespace collapsed."""
    selects: list[str] = []

    def seen(_conn, _cursor, statement, *_rest) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(" ".join(statement.split()))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield selects
    finally:
        event.remove(engine, "before_cursor_execute", seen)
