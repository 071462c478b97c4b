"""Cursor pagination (``limit``, ``starting_after``, ``has_more``), newest first, keyed by public id.

Ids are time-ordered (``core.ids``), so "older than the cursor" is ``id < cursor``: one index range scan
however deep the page, never ``OFFSET``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute

from core.db import db

T = TypeVar("T")


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: str | None = Field(default=None, max_length=64)


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_starting_after: str | None = None


def fetch_page(
    stmt: Select[Any], id_column: InstrumentedAttribute[str], query: PageQuery
) -> tuple[Sequence[Any], bool]:
    """Rows of ``stmt`` older than the cursor, newest first, and whether more remain."""
    if query.starting_after:
        stmt = stmt.where(id_column < query.starting_after)
    rows = db.session.scalars(stmt.order_by(id_column.desc()).limit(query.limit + 1)).all()
    return rows[: query.limit], len(rows) > query.limit
