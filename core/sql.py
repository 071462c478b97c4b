"""Statements on the driver's own cursor, for the paths every request takes.

SQLAlchemy owns the engine, the pool and the transaction's connection, and the ORM serves the rest of the
product. But on the hot paths (who is calling, a balance, a statement page, a trade step, a payment) its
per-statement machinery (an execution context, the compiled-statement cache, bind and result processors,
result metadata, the unit of work) cost three to five times what the driver itself spends on a statement:
about 0.15 ms against 0.03 ms of CPU for a one-row SELECT on the 2-core machine of ``bench/``. A
``Statement`` runs on the DBAPI connection of the caller's transaction instead (``core.db.transaction_connection``,
which the ORM joins when the same transaction uses it), *in* that transaction, and keeps what the product relies
on:

* SQL is written once with ``:name`` parameters and rewritten once per dialect into the driver's style
  (psycopg's ``%(name)s``; SQLite takes ``:name`` as it is). A literal ``%`` needs no escaping.
* Datetimes are bound the way ``core.db.UTCDateTime`` stores them (naive UTC; on SQLite the text SQLAlchemy
  writes) and dates the way ``Date`` stores them, so rows written here and rows written by the ORM compare
  and sort alike. Columns named in ``utc`` come back as aware UTC datetimes, ``boolean`` ones as bools and
  ``json`` ones decoded, on both databases.
* Driver errors are raised as SQLAlchemy's exception classes (``IntegrityError``, ``OperationalError`` ...)
  with the driver's exception as ``orig``; a lost connection is invalidated and the error flagged
  ``connection_invalidated``, as SQLAlchemy does, so the retry rules of ``core.db`` and every
  ``except IntegrityError`` see what they would have seen.
* A statement must run inside a transaction (``run_in_transaction``); one that writes is refused inside a
  read-only block (``ReadOnlyViolation``), before it is sent.
* ``listen(fn)`` hears every statement sent (the tests that pin a path to its statements use it).

Rows are tuples with attribute access by column name (a namedtuple per statement, built from the first
result's column names).

Rows written at commit (``insert_at_commit``): a row that nothing reads before the transaction ends (an outbox
alert, a timeline entry) waits on the transaction and is written just before COMMIT, all of a table's rows in one
multi-row INSERT. On PostgreSQL they ride along instead in the next statement run with ``execute_carrying``
(as data-modifying ``WITH`` queries), so writing them costs no statement of its own: the idempotency key's
stored answer, the last write of an idempotent request, carries the alerts and entries its effect queued. A
rollback throws them away with everything else.

A write that goes with the next statement (``write_before_next``): an UPDATE whose row count nobody checks, on a
row the transaction holds locked (a trade's step saving the trade), waits for the transaction's next statement.
A statement run with ``execute_carrying`` takes it along on PostgreSQL (one more data-modifying ``WITH`` query), so
an idempotent step's last change and its stored answer are one round trip; any other statement, through this
module or the ORM, sends it first (a read that names the tables it reads, ``reads_only``, only if it reads the
write's table), and COMMIT sends it when nothing else did. Statements keep their order as far as any read can tell.

Changes the ORM holds but has not flushed (an object whose attributes a step set) are flushed before a statement is
sent in a writing transaction, as the ORM's autoflush does before its own statements: a read here sees them (a trade
step's answer once showed a refund as it was before the deadline the step had just applied to it).
"""

from __future__ import annotations

import functools
import json
import re
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Table, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from core.clock import as_stored, as_utc
from core.db import (
    Blocks,
    ReadOnlyViolation,
    blocks,
    blocks_if_any,
    db,
    existing_session,
    leave_out_row_values,
    reading_engine,
    transaction_connection,
)

_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_READS = ("SELECT", "WITH R")  # WITH RECURSIVE reads; a plain WITH may write (data-modifying CTEs)
_BOUND = "core.sql.bound"
_CURSOR = "core.sql.cursor"
_listeners: list[Callable[[str], None]] = []


def listen(fn: Callable[[str], None]) -> None:
    """Call ``fn(sql)`` with the driver's SQL of every statement sent from now on."""
    _listeners.append(fn)


def unlisten(fn: Callable[[str], None]) -> None:
    _listeners.remove(fn)


class _Bound:
    """The connection statements run on, as this module uses it: the writing transaction's (kept until the
    transaction ends), or in a read-only block that has no transaction a pooled one of its own in autocommit
    (returned to the pool when the block ends)."""

    __slots__ = ("cursor", "dialect", "driver", "errors", "invalidate", "pending", "postgres", "read_only")

    def __init__(self, dialect: Any, pooled: Any, invalidate: Callable[[BaseException], None], read_only: bool) -> None:
        self.dialect, self.invalidate, self.read_only = dialect, invalidate, read_only
        # A write waiting to be sent (``write_before_next``): its SQL, parameters and table.
        self.pending: tuple[str, Mapping[str, Any], str] | None = None
        self.postgres, self.errors = dialect.name == "postgresql", dialect.loaded_dbapi.Error
        self.driver = pooled.driver_connection
        # One cursor per driver connection, kept with the pooled connection: psycopg keeps what it learnt about
        # a result's columns on the cursor.
        kept = pooled.info.get(_CURSOR)
        if kept is None or kept[0] is not self.driver:
            kept = pooled.info[_CURSOR] = (self.driver, self.driver.cursor())
        self.cursor = kept[1]

    @classmethod
    def of_transaction(cls, connection: Connection) -> _Bound:
        return cls(connection.dialect, connection.connection, connection.invalidate,
                   bool(connection.get_execution_options().get("read_only")))

    @classmethod
    def for_reading(cls, state: Blocks) -> _Bound:
        """A connection of the reading pool (always in autocommit) for a read-only block, returned when the block
        ends."""
        engine = reading_engine(db.engine)
        dbapi_error = engine.dialect.loaded_dbapi.Error
        try:
            pooled = engine.raw_connection()
        except dbapi_error as exc:  # the database cannot be reached: raised as SQLAlchemy's own connect would
            raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=engine.dialect,
                                      connection_invalidated=engine.dialect.is_disconnect(exc, None, None)) from exc

        def release() -> None:
            state.reading = None
            pooled.close()

        state.at_end.append(release)
        return cls(engine.dialect, pooled, pooled.invalidate, True)


def _bound() -> _Bound:
    state = blocks()
    if state.read_only:
        if state.reading is not None:
            return state.reading
        session = existing_session()
        if session is None or not session.in_transaction():
            state.reading = _Bound.for_reading(state)
            return state.reading
        # the block's ORM reads opened its (read-only) transaction first: run on that connection
        return _Bound.of_transaction(session.connection())
    if not state.depth:
        raise RuntimeError("a statement must run inside a transaction (core.db.run_in_transaction)")
    bound = state.info.get(_BOUND)
    if bound is None:
        bound = state.info[_BOUND] = _Bound.of_transaction(transaction_connection())
    return bound


_RowReader = tuple[type, list[tuple[int, Callable[[Any], Any]]]]  # a row type, and (column, converter) pairs


class _Dialected:
    """A statement made ready for one dialect: its SQL, how to bind, and how to read its rows."""

    __slots__ = ("bind", "postgres", "row", "sql")

    def __init__(self, sql: str, postgres: bool) -> None:
        self.sql = _PARAM.sub(r"%(\1)s", sql.replace("%", "%%")) if postgres else sql
        self.postgres = postgres
        self.bind = _bind_postgres if postgres else _bind_sqlite
        self.row: _RowReader | None = None


class Statement:
    """One SQL statement with ``:name`` parameters, run on the current transaction's connection; ``sql`` may
    map ``"postgresql"`` and ``"sqlite"`` to a text each where the two differ (``FOR UPDATE``, say).

    ``utc``, ``boolean`` and ``json`` name result columns to convert (see the module docstring). ``writes`` says
    whether it may write (by default: unless it starts with SELECT or WITH RECURSIVE). Run it with
    ``one`` (the first row or None), ``all`` (every row), ``scalar`` (the first column of the first row, or
    None) or ``run`` (the number of rows written). Parameters come as a mapping, keywords, or both.
    """

    __slots__ = ("_convert", "_dialects", "_sqlite", "reads_only", "sql", "writes")

    def __init__(self, sql: str | Mapping[str, str], *, utc: Iterable[str] = (), boolean: Iterable[str] = (),
                 json: Iterable[str] = (), writes: bool | None = None, reads_only: Iterable[str] = ()) -> None:
        self.sql = sql if isinstance(sql, str) else sql["postgresql"]
        self._sqlite = sql if isinstance(sql, str) else sql["sqlite"]
        self.writes = not self.sql.lstrip()[:6].upper().startswith(_READS) if writes is None else writes
        # A read that names every table it reads: a write waiting for another table need not go before it.
        self.reads_only = frozenset(reads_only)
        if self.reads_only and self.writes:
            raise ValueError("only a read can name the tables it reads (reads_only)")
        self._convert = {**{name: "utc" for name in utc}, **{name: "boolean" for name in boolean},
                         **{name: "json" for name in json}}
        self._dialects: dict[bool, _Dialected] = {}

    def __repr__(self) -> str:
        return f"Statement({' '.join(self.sql.split())[:60]!r}...)"

    def driver_sql(self, dialect: str) -> str:
        """The SQL as the driver of ``dialect`` (``"postgresql"`` or ``"sqlite"``) is sent it."""
        return self._ready(dialect == "postgresql").sql

    def _ready(self, postgres: bool) -> _Dialected:
        ready = self._dialects.get(postgres)
        if ready is None:
            ready = self._dialects[postgres] = _Dialected(self.sql if postgres else self._sqlite, postgres)
        return ready

    def one(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        rows = self._execute(params, kw, fetch=1)
        return rows[0] if rows else None

    def all(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> list[Any]:
        return self._execute(params, kw, fetch=-1)

    def scalar(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> Any:
        rows = self._execute(params, kw, fetch=1)
        return rows[0][0] if rows else None

    def run(self, params: Mapping[str, Any] | None = None, /, **kw: Any) -> int:
        """Execute a statement that returns no rows; the number of rows it wrote."""
        return self._execute(params, kw, fetch=0)

    def _execute(self, params: Mapping[str, Any] | None, kw: dict[str, Any], fetch: int) -> Any:
        ready, cursor, raw = self._send(params, kw, fetch)
        if fetch == 0:
            return raw
        if not raw:
            return []
        if ready.row is None:
            ready.row = self._row_reader(cursor.description, ready.postgres)
        return _made(raw, *ready.row)

    def _send(self, params: Mapping[str, Any] | None, kw: dict[str, Any], fetch: int) -> tuple[_Dialected, Any, Any]:
        """Run the statement: its dialect's form, the cursor, and its raw rows (a list; the row count if
        ``fetch`` is 0)."""
        bound = _bound()
        _flush_orm(bound)
        if bound.pending is not None and (not self.reads_only or bound.pending[2] in self.reads_only):
            _send_pending(bound)  # a waiting write goes first, unless this reads none of its table
        if self.writes and bound.read_only:
            raise ReadOnlyViolation(f"a read-only block tried to run {self.sql.split(None, 1)[0]}")
        postgres = bound.postgres
        ready = self._dialects.get(postgres) or self._ready(postgres)
        values = ready.bind({**params, **kw} if params and kw else params or kw)
        if _listeners:
            for listener in _listeners:
                listener(ready.sql)
        cursor = bound.cursor
        try:
            cursor.execute(ready.sql, values)
            if fetch == 0:
                return ready, cursor, cursor.rowcount
            raw = cursor.fetchone() if fetch == 1 else cursor.fetchall()
        except bound.errors as exc:
            raise _translated(exc, bound, ready.sql, values) from exc
        if fetch == 1:
            raw = [] if raw is None else [raw]
        return ready, cursor, raw

    def _row_reader(self, description: Any, postgres: bool) -> _RowReader:
        names = [column[0] for column in description]
        unknown = set(self._convert) - set(names)
        if unknown:
            raise ValueError(f"{self!r} converts columns it does not return: {sorted(unknown)}")
        readers = _POSTGRES_READERS if postgres else _SQLITE_READERS
        converters = [(i, readers[self._convert[name]]) for i, name in enumerate(names)
                      if name in self._convert and readers[self._convert[name]] is not None]
        return namedtuple("Row", names, rename=True), converters  # type: ignore[misc]


def _flush_orm(bound: _Bound) -> None:
    """In a writing transaction, send what the ORM changed and has not flushed, as its autoflush does before its own
    statements; not from inside a flush (whose first statement sends a waiting write through here:
    ``_send_pending_before_orm``). The Session's private flags: its public ``new``/``dirty``/``deleted`` build sets,
    3 µs a statement."""
    if not bound.read_only and db.session.registry.has():
        session = db.session.registry()
        if not session._flushing and not session._is_clean():
            session.flush()


def _made(raw: Iterable[Any], row_type: type, converters: list[tuple[int, Callable[[Any], Any]]]) -> list[Any]:
    """Raw driver rows as ``row_type`` tuples, the named columns converted."""
    make = row_type._make  # type: ignore[attr-defined]
    if not converters:
        return [make(r) for r in raw]
    rows = []
    for r in raw:
        values_out = list(r)
        for index, convert in converters:
            value = values_out[index]
            if value is not None:
                values_out[index] = convert(value)
        rows.append(make(values_out))
    return rows


# --- two reads in one statement --------------------------------------------------------------------------


class Joined:
    """Two reads sent as one statement: ``lead``, which finds at most one row, and ``read``, whose parameters named
    in ``links`` take their values from columns of the lead's row instead of being bound. ``all`` returns the lead's
    row (None if it found none) and the read's rows, each made and converted exactly as the statement alone would
    make them: one round trip, one statement, where running them one after the other costs two. What it is for: a
    request authenticates with the lead (who holds this token?) and reads what it came for with the read (that
    user's wallet), instead of one statement after the other (``security.auth.CALLER``).

    The read runs whether or not the lead finds a row (a link then reads as NULL and matches nothing), so it must
    be a read that may harmlessly run for anyone; the caller decides from the lead's row whether to use its rows.
    Both are plain SELECTs; they share one set of parameters, so their names must not clash. The read keeps its
    own ORDER BY: it is materialised first and joined to the single lead row by a nested loop, which keeps that
    order (SQLite and PostgreSQL alike; ``tests/integration/test_sql.py`` pins it).
    """

    __slots__ = ("_parts", "lead", "read", "statement")

    def __init__(self, lead: Statement, read: Statement, links: Mapping[str, str]) -> None:
        if lead.writes or read.writes:
            raise ValueError("only reads can be joined")
        self.lead, self.read = lead, read
        self._parts: dict[bool, tuple[int, _RowReader, _RowReader]] = {}

        def linked(text: str) -> str:
            # Column names from our own code, never from a request.
            return _PARAM.sub(lambda m: f"(SELECT {links[m[1]]} FROM lead_)" if m[1] in links else m[0],  # noqa: S608
                              text)

        def joined(lead_sql: str, read_sql: str) -> str:
            return (f"WITH lead_ AS MATERIALIZED ({lead_sql}), read_ AS MATERIALIZED ({linked(read_sql)})"  # noqa: S608
                    " SELECT lead_.*, EXISTS (SELECT 1 FROM read_) AS read_found_, read_.*"
                    " FROM lead_ LEFT JOIN read_ ON true")

        self.statement = Statement({"postgresql": joined(lead.sql, read.sql),
                                    "sqlite": joined(lead._sqlite, read._sqlite)}, writes=False)

    def all(self, params: Mapping[str, Any]) -> tuple[Any, list[Any]]:
        ready, cursor, raw = self.statement._send(params, {}, -1)
        if not raw:
            return None, []
        parts = self._parts.get(ready.postgres)
        if parts is None:  # where the lead's columns end, and how each part makes its rows
            split = [column[0] for column in cursor.description].index("read_found_")
            parts = self._parts[ready.postgres] = (
                split, self.lead._row_reader(cursor.description[:split], ready.postgres),
                self.read._row_reader(cursor.description[split + 1:], ready.postgres))
        split, (lead_type, lead_converters), (read_type, read_converters) = parts
        lead_row = _made([raw[0][:split]], lead_type, lead_converters)[0]
        if not raw[0][split]:
            return lead_row, []
        return lead_row, _made([r[split + 1:] for r in raw], read_type, read_converters)


# --- whose data a read is ---------------------------------------------------------------------------------


class Viewer(Protocol):
    """On whose behalf a read runs. A statement that reads one user's data names that user ``:viewer_id`` (and
    may name ``:viewer_staff``, true for staff); the viewer supplies both and runs it. ``Viewing`` is a user known
    by id; ``security.auth.CALLER`` is the request's caller, authenticated in the same statement as the read."""

    def read(self, statement: Statement, params: Mapping[str, Any]) -> list[Any]: ...


class Viewing(NamedTuple):
    """A viewer known by its user id (and whether it is staff)."""

    user_id: str
    staff: bool = False

    def read(self, statement: Statement, params: Mapping[str, Any]) -> list[Any]:
        return statement.all(params, viewer_id=self.user_id, viewer_staff=self.staff)


# --- binding and reading values ---------------------------------------------------------------------------


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a statement: every time in the product is aware UTC")
    return as_stored(value)


def _bind_postgres(params: Mapping[str, Any]) -> Mapping[str, Any]:
    if not any(type(v) is datetime for v in params.values()):
        return params
    return {k: _naive_utc(v) if type(v) is datetime else v for k, v in params.items()}


def _sqlite_value(value: Any) -> Any:
    if type(value) is datetime:
        return f"{_naive_utc(value):%Y-%m-%d %H:%M:%S.%f}"  # SQLAlchemy's DATETIME storage format on SQLite
    if type(value) is date:
        return value.isoformat()
    return value


def _bind_sqlite(params: Mapping[str, Any]) -> Mapping[str, Any]:
    if not any(type(v) in (datetime, date) for v in params.values()):
        return params
    return {k: _sqlite_value(v) for k, v in params.items()}


def _aware_from_text(value: str) -> datetime:
    return as_utc(datetime.fromisoformat(value))


# psycopg returns bools and decoded JSON itself; SQLite stores them as integers and text.
_POSTGRES_READERS: dict[str, Callable[[Any], Any] | None] = {"utc": as_utc, "boolean": None, "json": None}
_SQLITE_READERS: dict[str, Callable[[Any], Any] | None] = {"utc": _aware_from_text, "boolean": bool,
                                                           "json": json.loads}


def _translated(exc: Exception, bound: _Bound, sql: str, params: Mapping[str, Any]) -> DBAPIError:
    """The driver's error as SQLAlchemy would have raised it (with the engines' ``hide_parameters``: the values, a
    one-time code in an alert's body, a phone number, never reach a log); a lost connection is invalidated first."""
    leave_out_row_values(exc)  # nor the values PostgreSQL's DETAIL quotes
    lost = bound.dialect.is_disconnect(exc, bound.driver, bound.cursor)
    if lost:
        bound.invalidate(exc)
    return DBAPIError.instance(sql, params, exc, bound.dialect.loaded_dbapi.Error, hide_parameters=True,
                               connection_invalidated=lost, dialect=bound.dialect)


# --- rows written at commit (see the module docstring) -----------------------------------------------------

_AT_COMMIT = "core.sql.rows_at_commit"
_ROWS_PER_INSERT = 16
_plain_inserts: dict[tuple[str, tuple[str, ...], int], Statement] = {}
_new_inserts: dict[tuple[str, tuple[str, ...], int, str], Statement] = {}
_HOOKED = "core.sql.commit_hooked"
_WRITTEN_TABLE = re.compile(r"\s*(?:UPDATE|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)
_U_PARAM = r":u_\1"  # a waiting write's parameters, renamed apart from the carrying statement's
_carrying: dict[tuple[str, tuple[tuple[str, tuple[str, ...], int], ...], str | None], Statement] = {}

_Batch = tuple[str, tuple[str, ...], list[Mapping[str, Any]]]


def insert_at_commit(table: Table, row: Mapping[str, Any]) -> None:
    """Add ``row`` (a value for each column it names) to ``table`` in the current transaction, written before
    the transaction commits, or earlier by ``execute_carrying``; a rollback throws it away. Raises
    ``RuntimeError`` outside a transaction: the row must commit with the change it belongs to."""
    state = blocks()
    if not state.depth:
        raise RuntimeError(f"a row for {table.name} must be written inside the transaction of the change it belongs to")
    if state.read_only:
        raise ReadOnlyViolation(f"a read-only block tried to write a row for {table.name}")
    waiting = state.info.get(_AT_COMMIT)
    if waiting is None:
        waiting = state.info[_AT_COMMIT] = []
        _hook_commit(state)
    waiting.append((table.name, row))


def queued_at_commit(row: Mapping[str, Any]) -> bool:
    """Whether ``row`` (this very mapping, given to ``insert_at_commit`` in the current transaction) still waits
    to be written: while it does, its owner may still change its values; once a statement carried it, it is
    written and a change would be lost."""
    return any(queued is row for _table, queued in blocks().info.get(_AT_COMMIT, ()))


def write_before_next(statement_sql: str, params: Mapping[str, Any]) -> None:
    """Send ``statement_sql`` (one UPDATE or DELETE with ``:named`` parameters) with the next statement of the
    transaction instead of on its own: on PostgreSQL a statement run with ``execute_carrying`` takes it along as
    one more data-modifying ``WITH`` query (with the rows waiting for commit), so a change followed only by such a
    statement (an idempotent request's stored answer) costs no round trip of its own. Any other statement, through
    this module or the ORM, sends it first, and so does COMMIT: nothing ever reads the database without it, and
    statements keep their order. Its row count is never known, so it must be a write whose count nobody checks
    (one on a row the transaction holds locked). One waits at a time: a second sends the first. A read that
    names the tables it reads (``Statement(reads_only=...)``), none of them this write's, runs before it."""
    bound = _bound()  # raises outside a transaction
    if bound.read_only:
        raise ReadOnlyViolation(f"a read-only block tried to run {statement_sql.split(None, 1)[0]}")
    if bound.pending is not None:
        _send_pending(bound)
    written = _WRITTEN_TABLE.match(statement_sql)
    if written is None:
        raise ValueError(f"not an UPDATE or DELETE: {statement_sql.split(None, 1)[0]}")
    bound.pending = (statement_sql, params, written[1])
    _hook_commit(blocks())


def _send_pending(bound: _Bound) -> None:
    statement_sql, params, _table = bound.pending  # type: ignore[misc]
    bound.pending = None
    execute_carrying(statement_sql, params)  # carrying the rows waiting for commit


def _hook_commit(state: Blocks) -> None:
    """Have ``_write_at_commit`` run before this transaction commits (once)."""
    if _HOOKED not in state.info:
        state.info[_HOOKED] = True
        state.before_commit.append(_write_at_commit)


@event.listens_for(Engine, "before_cursor_execute")
def _send_pending_before_orm(*_: Any) -> None:
    # An ORM statement (or any other through SQLAlchemy) may read what a waiting write changes: send it first.
    state = blocks_if_any()
    bound = state.info.get(_BOUND) if state is not None and state.depth else None
    if bound is not None and bound.pending is not None:
        _send_pending(bound)


def execute_carrying(statement_sql: str, params: Mapping[str, Any]) -> int:
    """Run ``statement_sql`` (one INSERT, UPDATE or DELETE with ``:named`` parameters) and write the rows waiting
    for commit: on PostgreSQL in the same statement, as data-modifying ``WITH`` queries before it (one round trip
    for both; foreign keys are checked at the end of the statement, so a carried row may refer to the row the
    statement inserts); elsewhere by INSERTs just after it. Returns the number of rows the statement wrote."""
    bound = _bound()
    _flush_orm(bound)  # first, while the waiting write is still there to go before it (found by a review)
    pending, bound.pending = bound.pending, None  # a write waiting to be sent (``write_before_next``) goes first
    batches = _take_rows()
    if not bound.postgres or not (batches or pending):
        if pending is not None:
            _carrying_statement(pending[0], (), None).run(pending[1])
        written = _carrying_statement(statement_sql, (), None).run(params)
        _write_rows(batches)
        return written
    shape = tuple((table, columns, len(rows)) for table, columns, rows in batches)
    values = dict(params)
    if pending is not None:
        values.update({f"u_{name}": value for name, value in pending[1].items()})
    for n, (_table, columns, rows) in enumerate(batches):
        values.update(_row_params(columns, rows, f"w{n}_"))
    return _carrying_statement(statement_sql, shape, pending and pending[0]).run(values)


def _carrying_statement(statement_sql: str, shape: tuple[tuple[str, tuple[str, ...], int], ...],
                        pending_sql: str | None) -> Statement:
    stmt = _carrying.get((statement_sql, shape, pending_sql))
    if stmt is None:
        queries = [f"u AS ({_PARAM.sub(_U_PARAM, pending_sql)})"] if pending_sql else []
        queries += [f"w{n} AS ({_values_insert(table, columns, count, f'w{n}_')})"
                    for n, (table, columns, count) in enumerate(shape)]
        text = f"WITH {', '.join(queries)} {statement_sql}" if queries else statement_sql
        stmt = _carrying[(statement_sql, shape, pending_sql)] = Statement(text, writes=True)
    return stmt


def _take_rows() -> list[_Batch]:
    """The rows waiting for commit, taken off the transaction, in batches (``_batches``)."""
    return _batches(blocks().info.pop(_AT_COMMIT, ()))


def _batches(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> list[_Batch]:
    """``(table, row)`` pairs by table and column set, at most 16 rows per batch (one multi-row INSERT each)."""
    groups: dict[tuple[str, tuple[str, ...]], list[Mapping[str, Any]]] = {}
    for table, row in rows:
        groups.setdefault((table, tuple(row)), []).append(row)
    return [(table, columns, group[start:start + _ROWS_PER_INSERT])
            for (table, columns), group in groups.items() for start in range(0, len(group), _ROWS_PER_INSERT)]


def _values_insert(table: str, columns: tuple[str, ...], count: int, prefix: str) -> str:
    """``INSERT INTO table (...) VALUES (...), (...)`` for ``count`` rows: one statement (an executemany would
    cost psycopg a pipeline and a sync)."""
    rows = ", ".join("(" + ", ".join(f":{prefix}{name}_{i}" for name in columns) + ")" for i in range(count))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {rows}"  # noqa: S608 - names from our models


@functools.lru_cache(maxsize=512)
def _param_names(columns: tuple[str, ...], count: int, prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{name}_{i}" for i in range(count) for name in columns)


class WrittenAs:
    """A value of a row waiting for commit (``insert_at_commit``) that is computed when the row is written: for a
    value its owner keeps changing until then (an outbox event's messages, encoded once, however many join it)."""

    __slots__ = ("compute",)

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute = compute


def _row_params(columns: tuple[str, ...], rows: list[Mapping[str, Any]], prefix: str = "") -> dict[str, Any]:
    values = [row[name] for row in rows for name in columns]
    return dict(zip(_param_names(columns, len(rows), prefix),
                    [value.compute() if type(value) is WrittenAs else value for value in values], strict=True))


def _write_rows(batches: list[_Batch]) -> None:
    for table, columns, rows in batches:
        key = (table, columns, len(rows))
        stmt = _plain_inserts.get(key)
        if stmt is None:
            stmt = _plain_inserts[key] = Statement(_values_insert(table, columns, len(rows), ""))
        stmt.run(_row_params(columns, rows))


def insert_new_rows(table: Table, rows: Iterable[Mapping[str, Any]], key: str) -> set[Any]:
    """Write ``rows`` (each a value for every column it names) into ``table`` now, in the current transaction:
    multi-row INSERTs, one per column set and up to 16 rows each. A row whose ``key`` (a unique column) is taken, by a
    row of ``table`` or an earlier one of ``rows``, is left out instead of failing the transaction; returns the keys
    of the rows written."""
    fresh: dict[Any, Mapping[str, Any]] = {}
    for row in rows:
        fresh.setdefault(row[key], row)
    written: set[Any] = set()
    for name, columns, batch in _batches((table.name, row) for row in fresh.values()):
        cached = (name, columns, len(batch), key)
        stmt = _new_inserts.get(cached)
        if stmt is None:
            stmt = _new_inserts[cached] = Statement(
                f"{_values_insert(name, columns, len(batch), '')} ON CONFLICT ({key}) DO NOTHING RETURNING {key}")
        written.update(row[0] for row in stmt.all(_row_params(columns, batch)))
    return written


def _write_at_commit() -> None:
    """Send the write still waiting and the rows no statement carried (``core.db`` runs this just before
    COMMIT): the write carries the rows when there is one."""
    bound = blocks().info.get(_BOUND)
    if bound is not None and bound.pending is not None:
        _send_pending(bound)
        return
    batches = _take_rows()
    if batches:
        _write_rows(batches)
