"""What the ORM loads on touch outside any block (an attribute a commit expired, a lazy relationship) is loaded in a
read-only block of its own (``core.db``): no transaction is left open behind it, and on SQLite it takes no write
lock. Endpoints build their answers from objects their block has just committed; before, each such touch began a
transaction of the session's own that lasted until the request ended: on SQLite ``BEGIN IMMEDIATE``, so a second
writer waited for the first's answer to be serialised, and a touch behind another writer's lock waited ten seconds
and turned a committed change into a 503; on PostgreSQL a transaction left idle as long."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm.exc import ObjectDeletedError

from core.db import db, run_in_transaction
from core.ids import new_id
from security.models import User
from tests.conftest import PG_URL
from tests.factories import make_phone
from tests.integration.test_lost_connections import drop_the_pools_connections
from tests.statements import statements_sent

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _committed_user() -> User:
    """A user added through the ORM in a writing block; its commit expired every attribute."""
    user = User(id=new_id("usr"), phone=make_phone(), login_password_hash="x", payment_password_hash="x",
                locale="en", created_at=AT, updated_at=AT)
    run_in_transaction(lambda: db.session.add(user))
    return user


def _sqlite_file() -> str:
    return db.engine.url.database


def _idle_in_transaction() -> int:
    """Backends of this database, other than the one asking, left idle inside a transaction."""
    engine = create_engine(db.engine.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state = 'idle in transaction'")).scalar_one()
    finally:
        engine.dispose()


def test_an_expired_attribute_is_read_again_and_no_transaction_stays_open(app):
    with app.app_context():
        user = _committed_user()
        phone = db.session.execute(select(User.phone).where(User.id == user.id)).scalar_one()
        db.session.rollback()
        with statements_sent(app) as sent:
            assert user.phone == phone  # expired by the commit: read again
            assert user.locale == "en"  # the same load filled the rest: nothing more is sent
        assert len([s for s in sent if s.startswith("SELECT")]) == 1
        assert not db.session().in_transaction()
        if db.engine.dialect.name == "sqlite":
            assert "BEGIN IMMEDIATE" not in sent  # a deferred BEGIN: no write lock
            other = sqlite3.connect(_sqlite_file(), timeout=0)  # a second writer gets the lock at once
            try:
                other.execute("BEGIN IMMEDIATE")
                other.rollback()
            finally:
                other.close()
        else:
            assert _idle_in_transaction() == 0


@pytest.mark.skipif(bool(PG_URL), reason="SQLite's write lock")
def test_an_expired_attribute_is_read_while_another_writer_holds_the_lock(app):
    with app.app_context():
        user = _committed_user()
        other = sqlite3.connect(_sqlite_file(), timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE users SET locale = 'zh' WHERE id = ?", (user.id,))
            started = datetime.now(UTC)
            assert user.locale == "en"  # what was committed; the other writer's change is not
            assert (datetime.now(UTC) - started).total_seconds() < 2  # not the ten-second busy wait
        finally:
            other.rollback()
            other.close()
        assert not db.session().in_transaction()


def test_a_load_that_finds_the_row_gone_leaves_no_transaction_open(app):
    with app.app_context():
        user = _committed_user()
        run_in_transaction(lambda: db.session.execute(text("DELETE FROM users WHERE id = :id"), {"id": user.id}))
        with pytest.raises(ObjectDeletedError):
            _ = user.phone
        assert not db.session().in_transaction()


def test_a_load_whose_pooled_connection_was_dropped_runs_again_on_a_fresh_one(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL)")
    with app.app_context():
        user = _committed_user()
        assert drop_the_pools_connections(app) >= 1  # the block's connection, back in the pool
        assert user.locale == "en"
        assert not db.session().in_transaction()


def test_inside_a_writing_block_an_expired_attribute_is_read_in_that_block(app):
    with app.app_context():
        user = _committed_user()

        def work() -> str:
            with statements_sent(app) as sent:
                locale = user.locale
            # the block's own connection: on SQLite its BEGIN IMMEDIATE, then the read
            assert [s for s in sent if s.startswith("BEGIN")] in ([], ["BEGIN IMMEDIATE"])
            return locale

        assert run_in_transaction(work) == "en"
        assert not db.session().in_transaction()

