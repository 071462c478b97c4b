"""A card cannot be removed while a top-up from it is under way: the top-up locks the card when it reads it, so a
removal waits for the top-up to be recorded and then finds it pending (409 ``card_in_use``). Found by an audit: the
top-up read the card without a lock, the removal committed in between, and the top-up then failed with a 500 and
stayed pending for good, while the worker's retry of pending top-ups stopped at it on every run."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import select, text

from core.db import db, run_in_transaction
from tests.conftest import PG_URL
from tests.lock_waits import waits_on_a_lock
from wallet import funds
from wallet.funds import BankDeclined, complete_topup, create_topup, retry_pending_topups
from wallet.funds_models import TopUp


def _pending_topup(app, user_id: str, card_id: str, amount: int) -> str:
    with app.app_context():
        return run_in_transaction(lambda: create_topup(user_id, card_id, amount, "CNY").id)


def _status(app, topup_id: str) -> tuple[str, str | None]:
    with app.app_context():
        return tuple(db.session.execute(select(TopUp.status, TopUp.failure_reason).where(TopUp.id == topup_id)).one())


@pytest.mark.skipif(not PG_URL, reason="SQLite runs one writer at a time: the removal cannot come in between")
def test_a_removal_waits_for_a_top_up_that_has_read_the_card_and_is_then_refused(api, app, monkeypatch):
    alice = api.verified()
    user_id, card_id = alice["user"]["id"], alice["card_id"]
    card_read, release, removal = threading.Event(), threading.Event(), {}
    read_card = funds.get_card_for_user

    def read_then_wait(*args, **kwargs):
        card = read_card(*args, **kwargs)
        card_read.set()
        release.wait(10)  # between reading the card and recording the top-up, the removal is tried
        return card

    monkeypatch.setattr(funds, "get_card_for_user", read_then_wait)

    def top_up() -> None:
        with app.app_context():
            run_in_transaction(lambda: create_topup(user_id, card_id, 700, "CNY"))

    def remove() -> None:
        response = app.test_client().delete(f"/api/v1/me/bank-cards/{card_id}", headers=alice["headers"])
        removal["answer"] = (response.status_code, response.get_json())

    holder = threading.Thread(target=top_up)
    holder.start()
    assert card_read.wait(10)
    remover = threading.Thread(target=remove)
    remover.start()
    assert waits_on_a_lock(remover) and not removal, removal  # waiting on the card's lock
    release.set()
    holder.join(10)
    remover.join(10)
    status, body = removal["answer"]
    assert (status, body["code"]) == (409, "card_in_use")


def test_a_pending_top_up_from_a_card_removed_before_the_lock_fails_instead_of_asserting(api, app):
    """A top-up left pending by the race above before this fix: finishing it fails it (the card has no token)."""
    alice = api.verified()
    topup_id = _pending_topup(app, alice["user"]["id"], alice["card_id"], 700)
    with app.app_context():
        db.session.execute(text("UPDATE bank_cards SET removed_at = created_at, bank_token = NULL WHERE id = :id"),
                           {"id": alice["card_id"]})
        db.session.commit()
        with pytest.raises(BankDeclined):
            complete_topup(topup_id)
    assert _status(app, topup_id) == ("failed", "card_removed")
    assert api.balance(alice) == 0


def test_the_worker_finishes_the_other_pending_top_ups_when_one_cannot_be(api, app, clock, monkeypatch, caplog):
    alice = api.verified()
    first, second = (_pending_topup(app, alice["user"]["id"], alice["card_id"], amount) for amount in (300, 400))
    real = funds.complete_topup

    def broken_first(topup_id: str):
        if topup_id == first:
            raise RuntimeError("something unexpected")
        return real(topup_id)

    monkeypatch.setattr(funds, "complete_topup", broken_first)
    clock.advance(minutes=2)
    with app.app_context(), caplog.at_level(logging.ERROR, logger="wallet.funds"):
        assert retry_pending_topups() == 1
    assert _status(app, first) == ("pending", None) and _status(app, second) == ("succeeded", None)
    assert f"top-up {first} could not be finished" in caplog.text
    assert api.balance(alice) == 400
