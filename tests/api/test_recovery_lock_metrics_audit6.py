"""/metrics counts the recovery locks (``recover``, since migration 0031) with the login and payment ones: how many are
in force (``wallet_credentials_locked``) and how many real accounts' recoveries have locked (``wallet_lock_events``,
from the ``recovery_locked`` alerts). Found by the twenty-eighth session's review: both gauges named only ``login`` and
``payment``, so an operator watching for someone guessing authenticator codes at recovery saw nothing."""

from tests.api.test_observability import sample
from tests.api.test_recovery_audit import locked_recovery


def test_a_locked_recovery_shows_in_both_lock_gauges(api, app, clock, inbox):
    before = api.client.get("/metrics").get_data(as_text=True)
    assert sample(before, 'wallet_credentials_locked{kind="recover"}') == 0
    locked_recovery(api, app, clock, inbox)  # its alert is in the outbox: the inbox ran the dispatcher
    body = api.client.get("/metrics").get_data(as_text=True)
    assert 'wallet_credentials_locked{kind="recover"} 1.0' in body
    assert 'wallet_credentials_locked{kind="login"} 0.0' in body  # the recovery's codes lock only recoveries
    assert sample(body, 'wallet_lock_events{kind="recover"}') - sample(before, 'wallet_lock_events{kind="recover"}') \
        == 1
    clock.advance(hours=3)  # the lock lifts by itself; the event stays counted
    body = api.client.get("/metrics").get_data(as_text=True)
    assert 'wallet_credentials_locked{kind="recover"} 0.0' in body
    assert sample(body, 'wallet_lock_events{kind="recover"}') - sample(before, 'wallet_lock_events{kind="recover"}') \
        == 1
