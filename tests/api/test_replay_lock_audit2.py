"""The retry of a money request after the payment password locked (1137465) answers the stored answer; found by the
review of that change: the wrong password whose entry *locks* the payment password, sent with a key that already has
its answer, was answered 201 ``Idempotent-Replayed`` too, as if it were right. Before the lock a replay checks the
password like any request (a wrong one is 401), so the entry that locks it is not a retry after a lock: it answers
423 ``payment_password_locked`` with ``locked_until`` (DESIGN 4.2), and only later retries get the stored answer."""

from __future__ import annotations

from tests.api.test_funds import invariants_hold


def test_the_wrong_password_that_locks_is_told_so_on_a_replay_too(api, app, inbox):
    alice, bob = api.verified(locale="en"), api.verified(locale="en")
    assert api.money("/api/v1/topups", alice, amount=50000, bank_card_id=alice["card_id"]).status_code == 201
    first = api.money("/api/v1/transfers", alice, key="lost-answer", to_phone=bob["phone"], amount=1200)
    assert first.status_code == 201, first.json

    def retry(password):
        return api.client.post("/api/v1/transfers", headers={**alice["headers"], "Idempotency-Key": "lost-answer"},
                               json={"payment_password": password, "to_phone": bob["phone"], "amount": 1200})

    answers = [retry("000000") for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [401, 401], [a.json for a in answers]
    assert (answers[2].status_code, answers[2].json.get("code")) == (423, "payment_password_locked"), answers[2].json
    assert answers[2].json["locked_until"]
    # Once locked, the retry answers what happened (the change under review) ...
    again = api.money("/api/v1/transfers", alice, key="lost-answer", to_phone=bob["phone"], amount=1200)
    assert (again.status_code, again.json) == (201, first.json)
    assert api.balance(alice) == 50000 - 1200
    invariants_hold(app)
