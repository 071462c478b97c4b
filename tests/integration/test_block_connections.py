"""A writing block's connection (``core.db.transaction_connection``): statements on the driver's cursor and the
ORM share one connection and one transaction, whichever comes first; the block commits or rolls back both; what
the ORM loaded before is read again after a block that wrote; per-transaction values end with the transaction;
and a Session already in a transaction keeps its own connection."""

from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, select

from core import sql
from core.db import ReadOnlyViolation, db, run_in_transaction, transaction_connection, transaction_info
from core.ids import new_id
from notifications import dispatcher
from notifications.models import Alert, AlertEvent
from notifications.outbox import enqueue
from security.models import User
from tests.factories import make_phone

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
_INSERT_USER = sql.Statement(
    "INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
    " created_at, updated_at) VALUES (:id, :phone, 'x', 'x', 'en', false, false, :at, :at)")
_RENAME = sql.Statement("UPDATE users SET locale = :locale WHERE id = :id")
_LOCALE = sql.Statement("SELECT locale FROM users WHERE id = :id")


def orm_user() -> User:
    return User(id=new_id("usr"), phone=make_phone(), login_password_hash="x", payment_password_hash="x",
                locale="en", created_at=AT, updated_at=AT)


def users_named(*ids: str) -> set[str]:
    return set(db.session.scalars(select(User.id).where(User.id.in_(ids))))


class Boom(Exception):
    pass


@pytest.mark.parametrize("statement_first", [True, False])
def test_statements_and_the_orm_share_one_transaction_whichever_comes_first(app, statement_first):
    by_statement, by_orm = new_id("usr"), None

    def work() -> tuple[str, str]:
        nonlocal by_orm
        steps = [lambda: _INSERT_USER.run(id=by_statement, phone=make_phone(), at=AT),
                 lambda: (db.session.add(user := orm_user()), db.session.flush(), user.id)[-1]]
        results = [step() for step in (steps if statement_first else steps[::-1])]
        by_orm = results[1] if statement_first else results[0]
        # Each sees the other's uncommitted row: the same connection, the same transaction.
        seen_by_orm = db.session.get(User, by_statement)
        seen_by_statement = _LOCALE.scalar(id=by_orm)
        return seen_by_orm.id, seen_by_statement

    with app.app_context():
        assert run_in_transaction(work) == (by_statement, "en")
    with app.app_context():
        assert users_named(by_statement, by_orm) == {by_statement, by_orm}


def test_a_failure_rolls_back_the_statements_and_the_orm_alike(app):
    by_statement = new_id("usr")
    made = []

    def work() -> None:
        _INSERT_USER.run(id=by_statement, phone=make_phone(), at=AT)
        user = orm_user()
        db.session.add(user)
        db.session.flush()
        made.append(user.id)
        enqueue(make_phone(), "registered", locale="en", phone="0100")
        raise Boom

    with app.app_context():
        with pytest.raises(Boom):
            run_in_transaction(work)
        assert not db.session().in_transaction()
    with app.app_context():
        assert users_named(by_statement, *made) == set()
        assert db.session.scalars(select(AlertEvent)).all() == []


def test_a_block_without_the_orm_commits_its_statements_and_the_rows_waiting_for_commit(app):
    user_id = new_id("usr")

    def work() -> None:
        _INSERT_USER.run(id=user_id, phone=make_phone(), at=AT)
        enqueue(make_phone(), "registered", locale="en", user_id=user_id, phone="0100")

    with app.app_context():
        run_in_transaction(work)
        assert not db.session.registry.has()
    with app.app_context():
        assert users_named(user_id) == {user_id}
        assert dispatcher.expand() == 1
        assert [alert.user_id for alert in db.session.scalars(select(Alert))] == [user_id]


def test_what_the_orm_loaded_before_is_read_again_after_a_block_that_wrote(app):
    with app.app_context():
        user = orm_user()
        db.session.add(user)
        db.session.commit()
        user_id = user.id
    with app.app_context():
        loaded = run_in_transaction(lambda: db.session.get(User, user_id), read_only=True)
        assert loaded.locale == "en"
        run_in_transaction(lambda: _RENAME.run(id=user_id, locale="zh"))  # statements only: no Session commit
        assert loaded.locale == "zh"


def test_per_transaction_values_end_with_the_transaction_committed_or_not(app):
    seen = []

    def remember() -> None:
        seen.append(dict(transaction_info()))
        transaction_info()["mark"] = 1

    def remember_then_fail() -> None:
        remember()
        raise Boom

    with app.app_context():
        run_in_transaction(remember)
        with pytest.raises(Boom):
            run_in_transaction(remember_then_fail)
        run_in_transaction(remember)
    assert seen == [{}, {}, {}]


def test_outside_a_writing_block_there_is_no_transaction_connection(app):
    with app.app_context():
        with pytest.raises(RuntimeError):
            transaction_connection()
        with pytest.raises(RuntimeError):
            transaction_info()
        with pytest.raises(RuntimeError):
            run_in_transaction(transaction_connection, read_only=True)


def test_rows_waiting_for_commit_are_refused_in_a_read_only_block(app):
    with app.app_context(), pytest.raises(ReadOnlyViolation):
        run_in_transaction(lambda: enqueue(make_phone(), "registered", locale="en", phone="0100"), read_only=True)


def test_a_session_already_in_a_transaction_keeps_its_connection_and_the_block_commits_through_it(app):
    user_id = new_id("usr")
    with app.app_context():
        db.session.scalars(select(User.id).limit(1)).all()  # the ORM begins a transaction outside any block
        assert db.session().in_transaction()
        outer = db.session.connection()

        def work() -> None:
            assert transaction_connection() is outer
            _INSERT_USER.run(id=user_id, phone=make_phone(), at=AT)

        run_in_transaction(work)
        assert not db.session().in_transaction()  # committed through the Session
    with app.app_context():
        assert users_named(user_id) == {user_id}


def test_a_rollback_that_fails_too_does_not_hide_the_error_that_failed_the_transaction(app, monkeypatch):
    """The first error decides what happens next (``core.db`` never retries a transaction whose COMMIT failed):
    an error from the rollback after it must not take its place."""
    user_id = new_id("usr")

    def failing_rollback(self):
        raise RuntimeError("the rollback failed as well")

    def work() -> None:
        _INSERT_USER.run(id=user_id, phone=make_phone(), at=AT)
        monkeypatch.setattr(Connection, "rollback", failing_rollback)
        raise Boom

    with app.app_context():
        with pytest.raises(Boom):
            run_in_transaction(work)
        monkeypatch.undo()
    with app.app_context():
        assert users_named(user_id) == set()
