"""A row read under a lock (``with_for_update``) is read afresh, even when this application context still holds the
object from an earlier block: a read-only block ends without expiring what it loaded (``core.db``), and the ORM
fills an object already in its identity map from a row only when told to (``populate_existing``). Without that, the
lock was taken and the decision then made on the values of before the wait: a change another transaction committed
meanwhile (the very thing the lock is there to see) went unseen."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from core.db import db, run_in_transaction
from core.ids import new_id
from security.models import User
from tests.factories import make_phone

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _changed_elsewhere(user_id: str, locale: str) -> None:
    """Another transaction, on a connection of its own, commits a change to the user's row."""
    with db.engine.connect() as conn, conn.begin():
        conn.execute(update(User).where(User.id == user_id).values(locale=locale))


@pytest.mark.parametrize("how", ["session.get", "select"])
def test_a_locked_read_sees_what_another_transaction_committed_since_the_object_was_loaded(app, how):
    with app.app_context():
        user_id = new_id("usr")
        run_in_transaction(lambda: db.session.add(User(
            id=user_id, phone=make_phone(), login_password_hash="x", payment_password_hash="x", locale="en",
            created_at=AT, updated_at=AT)))
        held = run_in_transaction(lambda: db.session.get(User, user_id), read_only=True)
        assert held.locale == "en"
        _changed_elsewhere(user_id, "zh")

        def locked() -> tuple[User | None, str]:
            if how == "session.get":
                found = db.session.get(User, user_id, with_for_update=True)
            else:
                found = db.session.scalars(select(User).where(User.id == user_id).with_for_update()).first()
            assert found is not None
            return found, found.locale  # what a decision under the lock would see (the commit expires it after)

        found, seen = run_in_transaction(locked)
        assert found is held  # the same object, as the identity map wants ...
        assert seen == "zh"  # ... filled from the row the lock was taken on
        assert run_in_transaction(lambda: db.session.get(User, user_id), read_only=True).locale == "zh"
