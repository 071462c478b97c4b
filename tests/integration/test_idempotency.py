"""The idempotency-key store on the real database, with an outbox row as the guarded effect."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.db import db
from core.errors import IdempotencyKeyMissing, IdempotencyKeyReused, ValidationFailed
from core.idempotency import IdempotencyRecord, fingerprint, purge_expired, run_idempotent
from notifications import dispatcher
from notifications.models import Alert
from notifications.outbox import enqueue

PHONE = "+12025550142"


def effect():
    alert = enqueue(PHONE, "registered", locale="en", phone="202****0142")
    return 201, {"alert": alert.id}


def alert_count():
    dispatcher.expand()  # as a dispatcher does before sending: the transactions' events become alerts
    return db.session.scalar(select(func.count()).select_from(Alert))


def test_same_key_same_request_replays_the_first_answer(app):
    with app.app_context():
        h = fingerprint("POST", "/x", {"a": 1})
        first = run_idempotent("usr_1", "k1", h, effect)
        second = run_idempotent("usr_1", "k1", h, effect)
        assert first[:2] == second[:2] and (first[2], second[2]) == (False, True)
        assert alert_count() == 1


def test_same_key_with_another_body_is_refused(app):
    with app.app_context():
        run_idempotent("usr_1", "k1", fingerprint("POST", "/x", {"a": 1}), effect)
        with pytest.raises(IdempotencyKeyReused) as caught:
            run_idempotent("usr_1", "k1", fingerprint("POST", "/x", {"a": 2}), effect)
        assert (caught.value.status, caught.value.code) == (422, "idempotency_key_reused")
        assert alert_count() == 1


def test_keys_are_scoped_per_caller(app):
    with app.app_context():
        h = fingerprint("POST", "/x", {})
        run_idempotent("usr_1", "k", h, effect)
        run_idempotent("usr_2", "k", h, effect)
        assert alert_count() == 2


def test_a_failed_effect_stores_nothing_so_a_retry_runs_again(app):
    with app.app_context():
        h = fingerprint("POST", "/x", {})

        def failing():
            enqueue(PHONE, "registered", locale="en", phone="x")
            raise ValidationFailed.field("amount", "too_big", "no")

        with pytest.raises(ValidationFailed):
            run_idempotent("usr_1", "k", h, failing)
        assert alert_count() == 0
        assert run_idempotent("usr_1", "k", h, effect)[2] is False


@pytest.mark.parametrize("key", [None, ""])
def test_a_missing_key_is_refused(app, key):
    with app.app_context(), pytest.raises(IdempotencyKeyMissing):
        run_idempotent("usr_1", key, "h", effect)


def test_a_malformed_key_is_refused(app):
    with app.app_context(), pytest.raises(ValidationFailed):
        run_idempotent("usr_1", "spaces are not allowed", "h", effect)


def test_keys_are_kept_24_hours_then_purged(app, clock):
    with app.app_context():
        h = fingerprint("POST", "/x", {})
        run_idempotent("usr_1", "k", h, effect)
        clock.advance(hours=23, minutes=59)
        assert purge_expired() == 0
        assert run_idempotent("usr_1", "k", h, effect)[2] is True
        clock.advance(timedelta(minutes=2))
        assert purge_expired() == 1
        assert db.session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


def test_twenty_concurrent_duplicates_have_one_effect_and_twenty_identical_answers(app):
    h = fingerprint("POST", "/x", {"amount": 100})
    barrier = threading.Barrier(20)
    answers, errors, flags = [], [], []

    def call():
        with app.app_context():
            barrier.wait()
            try:
                status, body, replayed = run_idempotent("usr_1", "same-key", h, effect)
                answers.append((status, body))
                flags.append(replayed)
            except Exception as exc:  # collected and asserted below: none may escape
                errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(answers) == 20 and len(set(map(repr, answers))) == 1
    assert sorted(flags) == [False] + [True] * 19
    with app.app_context():
        assert alert_count() == 1


def test_a_key_exactly_24_hours_old_is_still_kept(app, clock):
    """DESIGN 7: keys are kept *at least* 24 hours, so a retry at the 24th hour itself replays rather than paying
    again (the test above stops a minute either side of it)."""
    with app.app_context():
        h = fingerprint("POST", "/x", {})
        run_idempotent("usr_1", "k", h, effect)
        clock.advance(hours=24)
        assert purge_expired() == 0
        assert run_idempotent("usr_1", "k", h, effect)[2] is True
