"""The one SQLAlchemy object, the model base, and transaction helpers.

Transactions: a service function is decorated with ``@transactional``. The outermost call runs the function
inside ``run_in_transaction``: it commits on success, rolls back on any exception, and retries the whole
function a bounded number of times when the database reports a serialization failure, a deadlock or (on
SQLite) a busy database, so no client ever sees one. Nested calls join the outer transaction.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every transaction starts with
``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade. PostgreSQL is used when
``DATABASE_URL`` is set.

A block that only reads may say so (``run_in_transaction(fn, read_only=True)``). It opens nothing until it
reads: statements on the driver's cursor (``core.sql``) then run on a connection from a pool of its own whose
connections stay in autocommit (``reading_engine``: nothing to switch at checkout, nothing to roll back at
checkin), returned to it when the block ends; the ORM, if the block uses it, gets a connection whose
transaction is equally light (on SQLite a deferred ``BEGIN``, which takes no write lock; on PostgreSQL no BEGIN
and COMMIT at all, two round trips saved). Each statement sees what was committed before it started, as under
READ COMMITTED. Its end expires nothing: the objects it loaded keep the values it read (a commit would expire
them, and the next touch of any attribute would read the row again) until the next transaction that writes
commits. Every GET handler runs in one such block (``core.api``); a statement that writes inside one is refused
before it runs (``ReadOnlyViolation``), since on PostgreSQL it would commit on its own.

A block that writes takes one pooled connection when it first needs one (``transaction_connection``) and
commits or rolls back that connection itself. Statements on the driver's cursor (``core.sql``, the hot paths) run
on it, and so does the ORM when the block uses it: the Session joins the connection (``join_transaction_mode=
"rollback_only"``), its commit at the end of the block flushes and expires, and its rollback rolls the connection
back. A block that never touches the ORM creates no Session: the Session's own per-transaction bookkeeping
(autobegin, snapshots, its events) cost about a millisecond of CPU per escrow trade (four transactions).
Per-transaction values (``transaction_info``) and steps to run just before COMMIT (``core.sql`` writes the rows
that wait for commit there) live with the block, not with the Session. A Session that is already in a
transaction when a writing block begins (the ORM loaded something outside any block) keeps its connection, and
the block commits through it as before.

What the ORM loads on touch outside any block (an attribute a commit expired, when an endpoint builds its answer
from what its block has just committed; a lazy relationship) is loaded in a read-only block of its own. Left to
itself, the ORM would begin a transaction of the session's own that lasted until the application context ended:
on SQLite a write lock held while the answer was serialised, on PostgreSQL a transaction left idle as long.

Pooled connections are not pinged before use. A transaction whose connection turns out dead before COMMIT is
sent (a database restart) is run again on a fresh connection; one that loses it during COMMIT is not, since
whether it committed is unknown (the API answers 503 and the client retries with its Idempotency-Key).
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from flask import current_app
from flask.globals import _cv_app  # the application context's own variable, behind flask.g (see ``blocks``)
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, delete, event, inspect, select, tuple_
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from core.clock import as_stored, as_utc

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Blocks:
    """Where this application context (one request, one worker round) stands: how deep in ``atomic`` blocks,
    whether the outermost one is read-only, and what to do when it ends (``core.sql`` returns its reading
    connection with one). Kept on ``flask.g`` rather than on the session, so that a request whose reads are
    all statements on the driver's cursor never creates a Session at all."""

    __slots__ = ("at_end", "before_commit", "connection", "depth", "info", "read_only", "reading", "session_owned")

    def __init__(self) -> None:
        self.depth = 0
        self.read_only = False
        self.at_end: list[Callable[[], object]] = []
        self.reading: Any = None  # core.sql's connection for this read-only block, once it has one
        # The outermost writing block's connection, taken when something first needs it (``transaction_connection``),
        # and whether it is the Session's own (the Session was already in a transaction when the block began).
        self.connection: Connection | None = None
        self.session_owned = False
        self.info: dict[str, Any] = {}  # this transaction's values (``transaction_info``), dropped when it ends
        self.before_commit: list[Callable[[], object]] = []  # run just before COMMIT, in order


_BLOCKS = "_wallet_blocks"


def blocks() -> Blocks:
    """This application context's ``Blocks``. Raises ``RuntimeError`` outside an application context."""
    context = _cv_app.get(None)
    if context is None:
        raise RuntimeError("Working outside of application context.")
    # Read off the context's ``g`` directly: ``flask.g`` is a proxy that costs ten times as much, and a request
    # asks for its blocks a score of times (every statement, every row queued for commit).
    found = context.g.__dict__.get(_BLOCKS)
    if found is None:
        found = context.g.__dict__[_BLOCKS] = Blocks()
    return found


def blocks_if_any() -> Blocks | None:
    """This application context's ``Blocks`` if it has any yet (``None`` outside an application context)."""
    context = _cv_app.get(None)
    return None if context is None else context.g.__dict__.get(_BLOCKS)


def driver_reason(exc: DBAPIError) -> str:
    """The first line of the driver's message for ``exc`` (or its class name when it has none): why the database
    could not be reached, fit for one log or error line."""
    text = str(exc.orig).strip()
    return text.splitlines()[0] if text else type(exc.orig).__name__


_ROW_LEFT_OUT = "DETAIL:  (left out of the log: PostgreSQL's detail quotes the row's values)"


def leave_out_row_values(orig: BaseException) -> str | None:
    """Take PostgreSQL's DETAIL out of the driver's error ``orig`` (in place), and return the text it had; None when
    it had none. The DETAIL of a constraint violation quotes the row ("Failing row contains (usr_..., +12025550123,
    ...)", "Key (phone)=(+12025550123) already exists"): a phone number, an email, an authenticator's secret, which
    ``hide_parameters`` keeps out of the statement's part of the message but not out of the driver's. The first line
    still names the table and the constraint, which is what an operator needs."""
    detail = getattr(getattr(orig, "diag", None), "message_detail", None)
    if not detail or not orig.args or not isinstance(orig.args[0], str):
        return None
    before = orig.args[0]
    after = before.replace(f"DETAIL:  {detail}", _ROW_LEFT_OUT)
    if after == before:  # not in the format libpq writes: keep only the first line
        after = before.splitlines()[0] if before.strip() else type(orig).__name__
    orig.args = (after, *orig.args[1:])
    return before


@event.listens_for(Engine, "handle_error")
def _no_row_values_in_errors(context: Any) -> None:
    """Every database error SQLAlchemy raises leaves out the row values PostgreSQL quotes (``leave_out_row_values``),
    in the driver's error and in SQLAlchemy's, whose message was made from it; a 500's traceback is logged with both
    (found by the logs audit)."""
    orig = context.original_exception
    before = leave_out_row_values(orig)
    wrapped = context.sqlalchemy_exception
    if before is not None and wrapped is not None and wrapped.args and isinstance(wrapped.args[0], str):
        wrapped.args = (wrapped.args[0].replace(before, orig.args[0]), *wrapped.args[1:])


def existing_session() -> Any:
    """This context's Session if something created one already, else None (without creating one)."""
    return db.session() if db.session.registry.has() else None


def transaction_info() -> dict[str, Any]:
    """Values kept for the rest of the current transaction (caches, rows waiting for commit), dropped when it
    commits or rolls back. Raises ``RuntimeError`` outside a transaction."""
    state = blocks()
    if not state.depth:
        raise RuntimeError("transaction_info() outside a transaction")
    return state.info


def transaction_connection() -> Connection:
    """The connection of the current writing transaction, begun on first use: statements on the driver's cursor
    (``core.sql``) and the ORM share it. Raises ``RuntimeError`` outside a writing block."""
    state = blocks()
    if not state.depth or state.read_only:
        raise RuntimeError("transaction_connection() outside a writing transaction")
    if state.session_owned:
        return db.session().connection()
    connection = state.connection
    if connection is None:
        connection = db.engine.connect()
        try:
            connection.begin()  # on SQLite the "begin" event below issues BEGIN IMMEDIATE
        except BaseException:
            connection.close()
            raise
        state.connection = connection
    return connection


class _Session(FlaskSession):
    """Inside a read-only block the ORM gets its connections through the read-only variant of the engine (same
    pool): autocommit on PostgreSQL, a deferred BEGIN on SQLite, and every write refused. Inside a writing block
    it joins the block's connection (``transaction_connection``): its commit flushes and expires, and the block
    commits the connection; its rollback rolls the connection back."""

    def get_bind(self, mapper: Any = None, clause: Any = None, bind: Any = None, **kwargs: Any) -> Any:
        engine = super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)
        if bind is None and isinstance(engine, Engine):
            state = blocks()
            if state.read_only:
                return _read_only_engine(engine)
            if state.depth and not state.session_owned:
                return transaction_connection()
        return engine


_read_only_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def _read_only_engine(engine: Engine) -> Engine:
    variant = _read_only_engines.get(engine)
    if variant is None:
        variant = _read_only_engines[engine] = engine.execution_options(**_READ_ONLY_OPTIONS[engine.dialect.name])
    return variant


# "rollback_only": a Session that joins a writing block's connection never commits it (the block does), but its
# rollback rolls the connection back.
db = SQLAlchemy(model_class=Base, session_options={"class_": _Session, "join_transaction_mode": "rollback_only"})

_reading_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def reading_engine(engine: Engine) -> Engine:
    """A second engine on ``engine``'s database, with a pool of its own whose connections are always in
    autocommit: for the statements of read-only blocks (``core.sql``). Disposed with ``engine``."""
    reading = _reading_engines.get(engine)
    if reading is None:
        options = {**current_app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
                   "isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}  # never holds a transaction
        reading = _reading_engines[engine] = create_engine(engine.url, **options)
        event.listen(engine, "engine_disposed", lambda _engine: reading.dispose())
    return reading


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (portable across SQLite and PostgreSQL) and hands back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return as_stored(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


@event.listens_for(Engine, "connect")
def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        # Let SQLAlchemy's "begin" event below issue BEGIN IMMEDIATE instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_on_begin(conn: Any) -> None:
    if conn.dialect.name == "sqlite":
        options = conn.get_execution_options()
        conn.exec_driver_sql("BEGIN" if options.get("read_only") or options.get("snapshot") else "BEGIN IMMEDIATE")


# How a read-only block gets its connection, per dialect (see the module docstring).
_READ_ONLY_OPTIONS = {"sqlite": {"read_only": True},
                      "postgresql": {"read_only": True, "isolation_level": "AUTOCOMMIT"}}


_READS = ("SELECT", "BEGIN")  # BEGIN: SQLite's deferred one, which takes no write lock


@event.listens_for(Engine, "before_cursor_execute")
def _refuse_writes_when_read_only(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    # On PostgreSQL a read-only block runs in autocommit: a write there would commit on its own, outside any
    # transaction. Whatever tries one (a function that writes, called from a GET handler) fails loudly instead.
    if conn.get_execution_options().get("read_only") and statement.lstrip()[:6].upper() not in _READS:
        raise ReadOnlyViolation(f"a read-only block tried to run {statement.split(None, 1)[0]}")


class ReadOnlyViolation(RuntimeError):
    """Code inside a block declared read-only tried to write."""


# SQLSTATEs worth retrying on PostgreSQL: serialization failure, deadlock detected.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}
MAX_ATTEMPTS = 8

P = ParamSpec("P")
R = TypeVar("R")


def is_retryable(exc: BaseException) -> bool:
    """True for errors that mean "run the same transaction again", never for constraint violations."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and isinstance(orig, sqlite3.OperationalError) and (
        "locked" in str(orig) or "busy" in str(orig)
    )


def lost_before_commit(exc: DBAPIError) -> bool:
    """The connection died (a database restart, a dropped socket) before COMMIT was sent, so the server rolled
    the transaction back and running it again is safe. Pooled connections are not pinged before use (a round
    trip per transaction): a dead one is found by the first statement and the transaction retried here."""
    return bool(exc.connection_invalidated) and not getattr(exc, "during_commit", False)


def in_transaction() -> bool:
    return blocks().depth > 0


@contextmanager
def snapshot() -> Iterator[Connection]:
    """A connection of its own, outside any block, on which every statement reads the committed data of one moment:
    for reports that add up several reads (the books' check, the outbox's status), which read one after the other in
    autocommit could count a row that moved between two of them twice or not at all. On PostgreSQL a REPEATABLE READ,
    READ ONLY transaction; on SQLite a deferred read transaction (one snapshot in WAL mode, and no write lock)."""
    with db.engine.connect() as conn:
        conn.execution_options(snapshot=True)  # on SQLite a deferred BEGIN (``_sqlite_on_begin``)
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def in_snapshot(read: Callable[[Connection], R]) -> R:
    """``read(connection)`` on a ``snapshot`` connection; run again once on a fresh connection when the pooled one
    turns out dead (a database restart), as a block is (``run_in_transaction``): a report read after a restart must not
    say the database is down (found by a review: /metrics's ``wallet_database_up 0`` once per process)."""
    for attempt in (1, 2):
        try:
            with snapshot() as conn:
                return read(conn)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


@contextmanager
def atomic(read_only: bool = False) -> Iterator[None]:
    """Join the current transaction, or be the outermost block: commit on success, roll back on error.
    ``read_only``: the block writes nothing (it matters only to an outermost block that starts the transaction)."""
    state = blocks()
    if state.depth:  # joins the outer block, which commits or rolls back
        state.depth += 1
        try:
            yield
        finally:
            state.depth -= 1
        return
    session = existing_session()
    if read_only and _may_read_lightly(session):
        _begin_read_only(state)
        try:
            yield
            _end_read_only(state, failed=False)
        except BaseException:
            _end_read_only(state, failed=True)
            raise
        return
    state.depth = 1
    # A Session already in a transaction (begun outside any block, by the ORM loading something) keeps its
    # connection, and the block commits through it; otherwise the block has a connection of its own.
    state.session_owned = session is not None and session.in_transaction()
    try:
        yield
        _commit(state)
    except BaseException:
        _rollback_after(state)
        raise  # the first error, never one from the rollback: it says whether the commit's outcome is unknown
    finally:
        connection, state.connection = state.connection, None
        state.depth, state.session_owned = 0, False
        state.info, state.before_commit = {}, []
        if connection is not None:
            connection.close()  # back to the pool


def _commit(state: Blocks) -> None:
    for step in state.before_commit:
        step()
    session = existing_session()
    if session is not None:
        if session.in_transaction():
            try:
                session.commit()  # flushes; commits the connection only if it is the Session's own
            except DBAPIError as exc:
                if state.session_owned:
                    exc.during_commit = True  # type: ignore[attr-defined]  # did it commit? unknown: never retried
                raise
        elif session.identity_map:
            session.expire_all()  # what the ORM loaded earlier may have changed: read it again when touched
    if state.connection is not None:
        try:
            state.connection.commit()
        except DBAPIError as exc:
            exc.during_commit = True  # type: ignore[attr-defined]  # did it commit? unknown: never retried
            raise


def _rollback_after(state: Blocks) -> None:
    """Roll back after a failure. A rollback that fails too is logged and its connection dropped, not raised: the
    transaction did not commit either way, and the caller must see the error that failed it."""
    session = existing_session()
    try:
        try:
            if session is not None and session.in_transaction():
                session.rollback()  # rolls back the block's connection too, when the Session had joined it
        finally:
            if state.connection is not None and state.connection.in_transaction():
                state.connection.rollback()
    except Exception:
        log.warning("rolling back a failed transaction failed too; its connection is dropped", exc_info=True)
        if state.connection is not None:
            state.connection.invalidate()


def _may_read_lightly(session: Any) -> bool:
    """A read-only block can skip the session unless the session is already in a transaction or holds changes."""
    return session is None or (not session.in_transaction() and not _has_changes(session))


def _begin_read_only(state: Blocks) -> None:
    state.depth, state.read_only = 1, True


def _end_read_only(state: Blocks, *, failed: bool) -> None:
    try:
        session = existing_session()
        if session is not None:
            if failed:
                session.rollback()
            elif session.in_transaction():  # the ORM read something
                _end_without_expiring(session)
    finally:
        state.depth, state.read_only = 0, False
        at_end, state.at_end = state.at_end, []
        for release in at_end:
            release()


@event.listens_for(_Session, "do_orm_execute")
def _locked_reads_read_afresh(orm_execute_state: Any) -> None:
    """A SELECT ... FOR UPDATE (``Session.get(..., with_for_update=True)`` too) fills the objects it finds from the
    rows it locked, also one the session already holds: a read-only block ends without expiring what it loaded, and
    the ORM leaves an object in its identity map as it was unless told otherwise (``populate_existing``), so a lock
    was taken to see what others committed, and the decision then made on the values of before the wait
    (``tests/integration/test_locked_reads.py``)."""
    if orm_execute_state.is_select and getattr(orm_execute_state.statement, "_for_update_arg", None) is not None:
        orm_execute_state.update_execution_options(populate_existing=True)


@event.listens_for(_Session, "do_orm_execute")
def _load_expired_in_a_block_of_its_own(orm_execute_state: Any) -> Any:
    """An attribute the ORM loads on touch (one a commit expired, a lazy relationship) outside any block is loaded in
    a read-only block of its own, as a GET handler's reads are. Without it, the load began a transaction of the
    session's own that lasted until the application context ended: on SQLite a write lock (``BEGIN IMMEDIATE``)
    held while an endpoint built its answer from what its block had just committed, on PostgreSQL a transaction
    left idle as long. A load whose pooled connection turns out dead is run again on a fresh one, as a block's
    reads are (``run_in_transaction``). Anything else the ORM runs outside a block (an explicit query) is left as it
    was."""
    if not (orm_execute_state.is_column_load or orm_execute_state.is_relationship_load):
        return None
    if _cv_app.get(None) is None:
        return None
    state = blocks()
    if state.depth or not _may_read_lightly(orm_execute_state.session):
        return None
    for attempt in (1, 2):
        _begin_read_only(state)
        try:
            loaded = orm_execute_state.invoke_statement().freeze()  # every row read, the objects filled, in the block
            _end_read_only(state, failed=False)
            return loaded()
        except DBAPIError as exc:
            _end_read_only(state, failed=True)
            if attempt == 2 or not lost_before_commit(exc):
                raise
        except BaseException:
            _end_read_only(state, failed=True)
            raise
    raise AssertionError("unreachable")


def _has_changes(session: Any) -> bool:
    return bool(session.new or session.dirty or session.deleted)


def _end_without_expiring(session: Any) -> None:
    if _has_changes(session):
        raise ReadOnlyViolation("a block declared read-only changed objects")
    expire = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = expire


def run_in_transaction(fn: Callable[[], R], attempts: int = MAX_ATTEMPTS, *, read_only: bool = False) -> R:
    """Run ``fn`` in one transaction, retrying serialization failures and deadlocks with jittered backoff.
    ``read_only``: ``fn`` writes nothing, so the transaction can be lighter (see the module docstring)."""
    state = blocks()
    if state.depth:
        return fn()
    for attempt in range(1, attempts + 1):
        try:
            if read_only and _may_read_lightly(existing_session()):  # the common GET: no context manager
                _begin_read_only(state)
                try:
                    result = fn()
                    _end_read_only(state, failed=False)
                except BaseException:
                    _end_read_only(state, failed=True)
                    raise
                return result
            with atomic(read_only):
                return fn()
        except DBAPIError as exc:
            if attempt < attempts and lost_before_commit(exc):
                continue  # the pool has dropped the dead connection: the next attempt gets a fresh one
            if not is_retryable(exc) or attempt == attempts:
                raise
            time.sleep(random.uniform(0, 0.002 * 2**attempt))
    raise AssertionError("unreachable")


def detached(obj: R) -> R:
    """``obj``, an ORM object of the current block, flushed and taken out of the session, so that what it holds can
    still be read once the block has committed. A commit expires every object the session holds, and reading an
    expired one outside any block begins a transaction of the session's own, which lasts until the request ends (on
    SQLite a write lock, ``BEGIN IMMEDIATE``). Only what was loaded can be read from it; a change to it is never
    written."""
    db.session.flush()
    db.session.expunge(obj)
    return obj


def delete_in_batches(key: Any, *conditions: Any, batch: int = 5000) -> int:
    """Delete the rows of ``key``'s table that meet ``conditions``, ``batch`` rows per transaction (a backlog never
    holds one long transaction or its locks); returns how many went. Several callers at once only share the work.
    ``key`` is the primary key column, or a tuple of its columns for a composite key."""
    columns = key if isinstance(key, tuple) else (key,)
    table = columns[0].class_
    matched = tuple_(*columns) if len(columns) > 1 else columns[0]

    def one_batch() -> int:
        doomed = select(*columns).where(*conditions).limit(batch)
        result = db.session.execute(delete(table).where(matched.in_(doomed)))
        return int(getattr(result, "rowcount", 0) or 0)

    total = 0
    while True:
        deleted = run_in_transaction(one_batch)
        total += deleted
        if deleted < batch:
            return total


def transactional(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of ``run_in_transaction`` for service functions."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return run_in_transaction(lambda: fn(*args, **kwargs))

    return wrapper


def primary_key(obj: Any) -> Any:
    """The primary key of a persistent ORM object, read without loading it: after a commit every attribute of
    an object is expired, and touching even its id would reload the whole row."""
    identity = inspect(obj).identity
    if identity is None:
        raise ValueError(f"{obj!r} has no identity yet")
    return identity[0] if len(identity) == 1 else identity


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"
