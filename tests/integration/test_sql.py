"""``core.sql``: statements on the driver's cursor agree with the ORM about every value they share, run in the
caller's transaction, and fail the way SQLAlchemy would (SQLite always, PostgreSQL with
WALLET_TEST_DATABASE_URL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import sql
from core.db import ReadOnlyViolation, db, reading_engine, run_in_transaction
from core.ids import new_id
from security.models import CredentialLock, User
from tests.factories import make_phone
from wallet.funds_models import DailyUsage

_INSERT_USER = sql.Statement(
    "INSERT INTO users (id, phone, login_password_hash, payment_password_hash, locale, is_staff, totp_enabled,"
    " created_at, updated_at) VALUES (:id, :phone, 'x', 'x', 'en', :staff, false, :at, :at)")
_READ_USER = sql.Statement("SELECT id, phone, is_staff, created_at FROM users WHERE id = :id",
                           utc=["created_at"], boolean=["is_staff"])
_USERS_CREATED = sql.Statement("SELECT id FROM users WHERE created_at = :at ORDER BY id")
_USERS_CREATED_BEFORE = sql.Statement("SELECT id FROM users WHERE created_at < :at ORDER BY created_at")


def orm_user(created_at: datetime, *, staff: bool = False) -> str:
    user = User(id=new_id("usr"), phone=make_phone(), login_password_hash="x", payment_password_hash="x",
                locale="en", is_staff=staff, created_at=created_at, updated_at=created_at)
    db.session.add(user)
    db.session.commit()
    return user.id


def test_a_row_the_orm_wrote_reads_back_with_the_same_values(app):
    at = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    with app.app_context():
        user_id = orm_user(at, staff=True)
        row = run_in_transaction(lambda: _READ_USER.one(id=user_id), read_only=True)
    assert row.id == user_id
    assert row.created_at == at and row.created_at.tzinfo is not None
    assert row.is_staff is True


@pytest.mark.parametrize("at", [datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),  # no microseconds: still .000000
                                datetime(2026, 3, 4, 5, 6, 7, 1, tzinfo=UTC),
                                datetime(2026, 3, 4, 13, 6, 7, 5, tzinfo=UTC).astimezone(
                                    __import__("zoneinfo").ZoneInfo("Asia/Shanghai"))])
def test_a_time_bound_here_matches_the_one_the_orm_stored(app, at):
    with app.app_context():
        user_id = orm_user(at)
        found = run_in_transaction(lambda: [r.id for r in _USERS_CREATED.all(at=at)], read_only=True)
    assert found == [user_id]


def test_a_row_written_here_reads_back_through_the_orm(app):
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    user_id, phone = new_id("usr"), make_phone()
    with app.app_context():
        assert run_in_transaction(lambda: _INSERT_USER.run(id=user_id, phone=phone, staff=True, at=at)) == 1
        db.session.expire_all()
        user = db.session.get(User, user_id)
        assert user is not None and user.created_at == at and user.is_staff is True
        # ... and sorts among ORM-written times by time, on SQLite too (it compares the stored text)
        earlier = orm_user(at - timedelta(microseconds=1))
        later = orm_user(at + timedelta(seconds=1))
        before = run_in_transaction(lambda: [r.id for r in _USERS_CREATED_BEFORE.all(at=at + timedelta(seconds=2))],
                                    read_only=True)
    assert before[-3:] == [earlier, user_id, later]


def test_json_booleans_and_dates_come_back_as_python_values(app):
    when = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    with app.app_context():
        user_id = orm_user(when)
        db.session.add(CredentialLock(subject="+12025550111", kind="login", recent_failures=[when.isoformat()],
                                      consecutive_failures=1, locked_until=when, hard_locked=False))
        db.session.add(DailyUsage(user_id=user_id, day=date(2026, 5, 6), amount=5))
        db.session.commit()
        lock = run_in_transaction(lambda: sql.Statement(
            "SELECT recent_failures, hard_locked, locked_until FROM credential_locks WHERE subject = :s",
            json=["recent_failures"], boolean=["hard_locked"], utc=["locked_until"]).one(s="+12025550111"),
            read_only=True)
        usage = run_in_transaction(lambda: sql.Statement(
            "SELECT amount FROM daily_usage WHERE user_id = :u AND day = :d").scalar(u=user_id, d=date(2026, 5, 6)),
            read_only=True)
    assert lock.recent_failures == [when.isoformat()]
    assert lock.hard_locked is False
    assert lock.locked_until == when
    assert usage == 5


def test_statements_share_the_transaction_of_orm_work_and_its_rollback(app):
    at = datetime(2026, 3, 4, tzinfo=UTC)
    user_id = new_id("usr")

    def work() -> None:
        db.session.add(User(id=user_id, phone=make_phone(), login_password_hash="x", payment_password_hash="x",
                            locale="en", created_at=at, updated_at=at))
        db.session.flush()
        assert _READ_USER.one(id=user_id) is not None  # sees the ORM's uncommitted row
        _INSERT_USER.run(id=new_id("usr"), phone=make_phone(), staff=False, at=at)
        raise LookupError("the use case fails after both writes")

    with app.app_context():
        with pytest.raises(LookupError):
            run_in_transaction(work)
        assert db.session.scalars(select(User.id)).all() == []


def test_a_duplicate_key_is_sqlalchemys_integrity_error(app):
    at = datetime(2026, 3, 4, tzinfo=UTC)
    with app.app_context():
        user_id = orm_user(at)
        with pytest.raises(IntegrityError) as caught:
            run_in_transaction(lambda: _INSERT_USER.run(id=user_id, phone=make_phone(), staff=False, at=at))
        assert caught.value.orig is not None and not caught.value.connection_invalidated
        assert db.session.scalars(select(User.id)).all() == [user_id]  # the session is usable afterwards


def test_a_write_in_a_read_only_block_is_refused_before_it_is_sent(app):
    sent: list[str] = []
    sql.listen(sent.append)
    try:
        with app.app_context():
            with pytest.raises(ReadOnlyViolation):
                run_in_transaction(lambda: _INSERT_USER.run(id=new_id("usr"), phone=make_phone(), staff=False,
                                                            at=datetime(2026, 1, 1, tzinfo=UTC)), read_only=True)
            assert db.session.scalars(select(User.id)).all() == []
    finally:
        sql.unlisten(sent.append)
    assert sent == []


def test_a_statement_outside_a_transaction_is_a_bug(app):
    with app.app_context(), pytest.raises(RuntimeError, match="inside a transaction"):
        _READ_USER.one(id="usr_nobody")


def test_a_naive_time_is_refused(app):
    with app.app_context(), pytest.raises(ValueError, match="naive"):
        run_in_transaction(lambda: _USERS_CREATED.all(at=datetime(2026, 1, 1)), read_only=True)


def test_listeners_hear_the_drivers_sql(app):
    sent: list[str] = []
    sql.listen(sent.append)
    try:
        with app.app_context():
            run_in_transaction(lambda: _READ_USER.one(id="usr_nobody"), read_only=True)
    finally:
        sql.unlisten(sent.append)
    assert len(sent) == 1 and sent[0].startswith("SELECT id, phone, is_staff, created_at FROM users")


def test_a_column_named_for_conversion_must_be_returned(app):
    wrong = sql.Statement("SELECT id FROM users WHERE id = :id", utc=["created_at"])
    with app.app_context():
        orm_user(datetime(2026, 1, 1, tzinfo=UTC))
        with pytest.raises(ValueError, match="created_at"):
            run_in_transaction(lambda: wrong.all(id=db.session.scalars(select(User.id)).one()), read_only=True)


def test_a_read_only_block_returns_its_connection_and_leaves_transactions_whole(app):
    """The read-only block's connection (from the reading pool, always in autocommit) goes back when the block
    ends, and the transactions that follow are still all or nothing."""
    at = datetime(2026, 3, 4, tzinfo=UTC)
    with app.app_context():
        pool, reading = db.engine.pool, reading_engine(db.engine).pool
        before = pool.checkedout()
        run_in_transaction(lambda: _READ_USER.one(id="usr_nobody"), read_only=True)
        assert (pool.checkedout(), reading.checkedout()) == (before, 0)

        def two_writes_then_a_failure() -> None:
            _INSERT_USER.run(id=new_id("usr"), phone=make_phone(), staff=False, at=at)
            _INSERT_USER.run(id=new_id("usr"), phone=make_phone(), staff=False, at=at)
            raise LookupError("fails after both")

        with pytest.raises(LookupError):
            run_in_transaction(two_writes_then_a_failure)
        assert run_in_transaction(lambda: sql.Statement("SELECT count(*) FROM users").scalar(), read_only=True) == 0
        assert pool.checkedout() == before


def test_a_read_only_block_mixing_orm_reads_and_statements_sees_both_and_writes_nothing(app):
    at = datetime(2026, 3, 4, tzinfo=UTC)
    with app.app_context():
        user_id = orm_user(at)
        db.session.expire_all()

        def read() -> tuple[str, datetime]:
            user = db.session.get(User, user_id)  # the ORM, in the block's light transaction
            assert user is not None
            return user.phone, _READ_USER.one(id=user_id).created_at

        phone, created_at = run_in_transaction(read, read_only=True)
        assert created_at == at and phone.startswith("+")
        with pytest.raises(ReadOnlyViolation):
            run_in_transaction(lambda: db.session.execute(
                User.__table__.update().where(User.__table__.c.id == user_id).values(locale="zh")), read_only=True)
        db.session.expire_all()
        assert db.session.get(User, user_id).locale == "en"


def test_blocks_of_statements_create_no_session(app):
    user_id = new_id("usr")
    with app.app_context():
        run_in_transaction(lambda: _READ_USER.one(id="usr_nobody"), read_only=True)
        assert not db.session.registry.has()
        run_in_transaction(lambda: _INSERT_USER.run(id=user_id, phone=make_phone(), staff=False,
                                                    at=datetime(2026, 1, 1, tzinfo=UTC)))
        assert not db.session.registry.has()  # the writing block had a connection of its own, and committed it
    with app.app_context():
        assert run_in_transaction(lambda: _READ_USER.one(id=user_id), read_only=True).id == user_id


# --- Joined: two reads in one statement ----------------------------------------------------------------

_LEAD_USER = sql.Statement("SELECT id, phone, is_staff, created_at FROM users WHERE phone = :phone",
                           utc=["created_at"], boolean=["is_staff"])
# Deliberately shares column names with the lead (id, created_at): each part keeps its own.
_USERS_AFTER = sql.Statement("SELECT id, created_at, is_staff FROM users WHERE created_at > (SELECT created_at FROM"
                             " users WHERE id = :viewer_id) AND phone LIKE :pattern ORDER BY created_at DESC LIMIT 5",
                             utc=["created_at"], boolean=["is_staff"])


def test_joined_reads_come_back_as_each_statement_alone_would_make_them(app):
    start = datetime(2026, 7, 1, tzinfo=UTC)
    with app.app_context():
        first = orm_user(start)
        phone = db.session.get(User, first).phone
        later = [orm_user(start + timedelta(minutes=n), staff=n % 2 == 0) for n in range(1, 8)]
        joined = sql.Joined(_LEAD_USER, _USERS_AFTER, {"viewer_id": "id"})
        lead, rows = run_in_transaction(lambda: joined.all({"phone": phone, "pattern": "%"}), read_only=True)
        alone = run_in_transaction(lambda: _USERS_AFTER.all(viewer_id=first, pattern="%"), read_only=True)
        lead_alone = run_in_transaction(lambda: _LEAD_USER.one(phone=phone), read_only=True)
    assert lead == lead_alone
    assert lead.id == first and lead.created_at == start and lead.is_staff is False
    # The read's own order and limit, its own column names and conversions
    assert [r.id for r in rows] == later[::-1][:5] == [r.id for r in alone]
    assert rows == alone and rows[0].created_at.tzinfo is not None and isinstance(rows[0].is_staff, bool)


def test_a_joined_read_with_no_rows_still_brings_the_lead_and_no_lead_brings_nothing(app):
    with app.app_context():
        user_id = orm_user(datetime(2026, 7, 2, tzinfo=UTC))
        phone = db.session.get(User, user_id).phone
        joined = sql.Joined(_LEAD_USER, _USERS_AFTER, {"viewer_id": "id"})
        lead, rows = run_in_transaction(lambda: joined.all({"phone": phone, "pattern": "no such phone"}),
                                        read_only=True)
        assert lead.id == user_id and rows == []
        # No lead: the link reads as NULL, which matches nothing, and there is no row at all
        assert run_in_transaction(lambda: joined.all({"phone": "+12025550000", "pattern": "%"}),
                                  read_only=True) == (None, [])


def test_only_reads_can_be_joined():
    with pytest.raises(ValueError, match="only reads"):
        sql.Joined(_LEAD_USER, _INSERT_USER, {})


def test_a_viewing_user_fills_the_viewer_parameters(app):
    start = datetime(2026, 7, 3, tzinfo=UTC)
    with app.app_context():
        first = orm_user(start)
        second = orm_user(start + timedelta(seconds=1))
        rows = run_in_transaction(lambda: sql.Viewing(first).read(_USERS_AFTER, {"pattern": "%"}), read_only=True)
    assert [r.id for r in rows] == [second]
