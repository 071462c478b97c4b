"""What PostgreSQL's plans touch: for the tests that keep a frequent statement off a table that only grows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event

from core.db import db


def statements_of(app, action: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SELECT statements (with their parameters) that ``action`` sent through SQLAlchemy."""
    seen: list[tuple[str, Any]] = []

    def record(_conn, _cursor, statement, parameters, _context, _executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def _rows_touched(node: dict[str, Any], tables: set[str]) -> int:
    own = 0
    if node.get("Relation Name") in tables:
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
               + node.get("Rows Removed by Index Recheck", 0)) * node["Actual Loops"]
    return own + sum(_rows_touched(child, tables) for child in node.get("Plans", []))


def rows_touched(app, statements: Iterable[tuple[str, Any]], tables: set[str]) -> dict[str, int]:
    """Per statement (whitespace folded), the rows its plan read from ``tables`` under ``EXPLAIN ANALYZE``: those
    its scans returned and those they read and threw away."""
    touched = {}
    with app.app_context(), db.engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for statement, params in statements:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            plan = cursor.fetchone()[0]
            root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
            touched[" ".join(statement.split())] = _rows_touched(root, tables)
        conn.rollback()
    return touched
