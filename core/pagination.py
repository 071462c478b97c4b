"""Cursor pagination (``limit``, ``starting_after``, ``has_more``), newest first, keyed by public id.

Ids are time-ordered (``core.ids``), so "older than the cursor" is ``id < cursor``: one index range scan
however deep the page, never ``OFFSET``.

A page's size is written into the SQL (``LIMIT 21``: one prepared statement per page size), not bound. psycopg
prepares a statement it runs often, and PostgreSQL then decides between one generic plan and a fresh plan per
run. With the LIMIT unknown, the generic plan is costed for a tenth of the matching rows; on a large table that
looks so much worse than a plan for twenty rows that PostgreSQL plans afresh every run (bench/ledger.py --scale
found it on the statement page: 0.5 ms of planning per page at 1M transfers, the page itself 0.2 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core import sql
from core.db import run_in_transaction

T = TypeVar("T")


# A cursor is the id of an item of the page before (``core.ids``): anything else is refused (422), never read as a
# position somewhere in the list.
CURSOR_PATTERN = r"^[a-z]{2,5}_[0-9a-z]{1,58}$"


Cursor = Field(default=None, pattern=CURSOR_PATTERN, description="The next_starting_after of the page before")


def cursor(prefix: str) -> Any:
    """``starting_after`` of a list of ``prefix`` ids: an id of that list's kind, whole (``core.ids``: the prefix, 10
    characters of time and 16 of randomness, in Crockford base32). Another list's id, or one cut short, is refused
    (422) like any other text: compared as a position, ``trd_...`` answered the alert list's first page again and a
    cut ``trd_01`` an empty page with ``has_more`` false."""
    return Field(default=None, pattern=rf"^{prefix}_[0-9a-hjkmnp-tv-z]{{26}}$",
                 description=f"The next_starting_after of the page before (a {prefix}_ id)")


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = Cursor


class AlertPageQuery(PageQuery):
    starting_after: str | None = cursor("sms")


class DevicePageQuery(PageQuery):
    starting_after: str | None = cursor("dev")


class CardPageQuery(PageQuery):
    starting_after: str | None = cursor("card")


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_starting_after: str | None = None


def read_page(viewer: sql.Viewer, statement: sql.Statement, params: Mapping[str, Any],
              limit: int) -> tuple[list[Any], bool]:
    """Rows of ``statement`` (written to fetch ``limit + 1``) read for ``viewer`` in a read-only block: the first
    ``limit`` of them, and whether more remain."""
    rows = run_in_transaction(lambda: viewer.read(statement, params), read_only=True)
    return rows[:limit], len(rows) > limit
