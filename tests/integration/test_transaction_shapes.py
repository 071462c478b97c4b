"""The lighter transaction shapes of the hot paths (read-only blocks, a login that records nothing when nothing
failed) keep the rules they replaced: a read-only block cannot write, a success never overtakes a lock."""

import importlib
import threading
import uuid

import pytest
from sqlalchemy import func, insert, select

from core.db import ReadOnlyViolation, db, run_in_transaction
from security.models import CredentialLock, User
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD

WRONG = "definitely not it"


def lock_rows(app, subject=None):
    with app.app_context():
        stmt = select(func.count()).select_from(CredentialLock)
        if subject is not None:
            stmt = stmt.where(CredentialLock.subject == subject)
        return db.session.scalar(stmt)


def test_a_read_only_block_that_adds_a_row_fails_and_writes_nothing(app):
    with app.app_context():

        def sneaky_write():
            db.session.add(CredentialLock(subject="+12025550142", kind="login", recent_failures=[],
                                          consecutive_failures=0, hard_locked=False))

        with pytest.raises(RuntimeError, match="read-only"):
            run_in_transaction(sneaky_write, read_only=True)
        db.session.rollback()
    assert lock_rows(app) == 0


def test_a_statement_that_writes_inside_a_read_only_block_is_refused_before_it_runs(app):
    """On PostgreSQL a read-only block runs in autocommit, where a write would commit on its own: refused."""
    with app.app_context():
        def core_write():
            db.session.execute(insert(CredentialLock.__table__).values(
                subject="+12025550142", kind="login", recent_failures=[], consecutive_failures=0, hard_locked=False))

        with pytest.raises(ReadOnlyViolation, match="INSERT"):
            run_in_transaction(core_write, read_only=True)
        db.session.rollback()
    assert lock_rows(app) == 0


@pytest.mark.parametrize(("module", "path"), [("security.auth", "/api/v1/devices"),  # authenticates alone first
                                              ("wallet.ledger", "/api/v1/wallet"),  # authenticates in its read
                                              ("security.accounts", "/api/v1/me")])  # likewise
def test_get_handlers_run_in_one_read_only_block(api, app, monkeypatch, module, path):
    """Every GET endpoint reads inside one read-only block: a write slipped into one fails loudly (500), and
    the row it tried to write is not there."""
    account = api.register()
    target = importlib.import_module(module)
    real_load = target.run_in_transaction

    def load_then_write(fn, *args, **kwargs):
        result = real_load(fn, *args, **kwargs)
        db.session.execute(insert(CredentialLock.__table__).values(
            subject="+12025550142", kind="login", recent_failures=[], consecutive_failures=0, hard_locked=False))
        return result

    monkeypatch.setattr(target, "run_in_transaction", load_then_write)
    assert api.client.get(path, headers=account["headers"]).status_code == 500
    assert lock_rows(app, "+12025550142") == 0


def test_a_read_only_block_sees_what_was_committed_before_it(api, app):
    phone = api.register()["phone"]
    with app.app_context():
        found = run_in_transaction(lambda: db.session.scalars(select(User).where(User.phone == phone)).all(),
                                   read_only=True)
        assert [user.phone for user in found] == [phone]  # still loaded after the block: it expired nothing


def test_a_successful_login_with_nothing_failed_records_no_lock_state(api, app):
    phone = api.register()["phone"]
    assert api.login(phone).status_code == 201
    assert lock_rows(app, phone) == 0


def test_a_success_after_failures_resets_the_counters_in_the_existing_row(api):
    phone = api.register()["phone"]
    assert [api.login(phone, WRONG).status_code for _ in range(2)] == [401, 401]
    assert api.login(phone).status_code == 201
    # the counters were reset: two more wrong tries are again the first and the second
    assert [api.login(phone, WRONG).json["attempts_left"] for _ in range(2)] == [2, 1]


def verify_with_three_wrong_tries_in_between(app, right, wrong_try):
    """Make the first argon2 check of the ``right`` password wait, once it has passed, until ``wrong_try`` has run
    three times from another client (each in its own request): the lock commits during that verification.
    Returns the calls made (one, when the interleaving happened) and a function that undoes the patch."""
    hasher = app.extensions["passwords"]
    real_verify = hasher.verify
    calls = []

    def verify(stored_hash, secret):
        result = real_verify(stored_hash, secret)
        if secret == right and not calls:
            calls.append(1)
            other = app.test_client()
            thread = threading.Thread(target=lambda: [wrong_try(other) for _ in range(3)])
            thread.start()
            thread.join()
        return result

    hasher.verify = verify
    return calls, lambda: setattr(hasher, "verify", real_verify)


def test_a_correct_password_verified_while_the_account_gets_locked_is_refused(api, app):
    """A right password whose argon2 check overlaps the third wrong one must not log in: the lock committed
    during its verification wins (the success re-reads the state row under a lock before opening a session)."""
    phone = api.register()["phone"]
    calls, undo = verify_with_three_wrong_tries_in_between(app, LOGIN_PASSWORD, lambda other: other.post(
        "/api/v1/sessions", json={"phone": phone, "login_password": WRONG, "device_id": "phone-1"}))
    try:
        response = api.login(phone)
    finally:
        undo()
    assert calls == [1]
    assert (response.status_code, response.json["code"]) == (423, "login_locked")


def test_a_correct_payment_password_verified_while_it_gets_locked_is_refused(api, app):
    account = api.verified()
    verify = "/api/v1/me/payment-password/verify"
    calls, undo = verify_with_three_wrong_tries_in_between(app, PAYMENT_PASSWORD, lambda other: other.post(
        verify, json={"payment_password": "864209"}, headers=account["headers"]))
    try:
        response = api.client.post(verify, json={"payment_password": PAYMENT_PASSWORD}, headers=account["headers"])
    finally:
        undo()
    assert calls == [1]
    assert (response.status_code, response.json["code"]) == (423, "payment_password_locked")


def wrong_payment(api, account):
    return api.client.post("/api/v1/transfers", json={"payment_password": "864209", "amount": 100,
                                                      "to_phone": account["phone"]},
                           headers={**account["headers"], "Idempotency-Key": uuid.uuid4().hex})


def test_a_payment_commits_with_its_password_check_and_a_failed_one_commits_nothing(api, app):
    alice, bob = api.register(), api.register()
    refused = api.money("/api/v1/transfers", alice, amount=100, to_phone=bob["phone"])  # an empty wallet
    assert refused.status_code == 422, refused.json
    assert lock_rows(app) == 0  # a right password with no failures before records nothing
    assert api.balance(alice) == 0 and api.balance(bob) == 0


def test_a_right_payment_password_resets_earlier_failures_even_when_the_payment_itself_fails(api, app):
    alice, bob = api.register(), api.register()
    assert [wrong_payment(api, alice).status_code for _ in range(2)] == [401, 401]
    refused = api.money("/api/v1/transfers", alice, amount=100, to_phone=bob["phone"])  # right password, no money
    assert refused.status_code == 422, refused.json
    # the reset stuck although the transfer rolled back: two more wrong tries are the first and second again
    assert [wrong_payment(api, alice).json["attempts_left"] for _ in range(2)] == [2, 1]
