"""Switch one of the database's guard triggers off for the length of a block, as someone with the database owner's
rights could: for tests of what the next line of defence (``flask wallet check``, ``flask escrow verify``) sees once a
row the guard would refuse is there anyway. The trigger is back when the block ends, also on SQLite, whose test
database the next tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from core.db import db


@contextmanager
def trigger_off(name: str, table: str) -> Iterator[None]:
    """Inside an application context: the trigger ``name`` on ``table`` does nothing until the block ends (on SQLite,
    a trigger named ``name`` or ``name_<event>``: each is dropped and made again)."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {name}"))
        try:
            yield
        finally:
            with db.engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {name}"))
        return
    with db.engine.begin() as conn:
        made = [(trigger, sql) for trigger, sql in conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table"), {"table": table})
            if trigger == name or trigger.startswith(f"{name}_")]
        assert made, f"no trigger {name} on {table}"
        for trigger, _sql in made:
            conn.execute(text(f"DROP TRIGGER {trigger}"))
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            for _trigger, sql in made:
                conn.execute(text(sql))
