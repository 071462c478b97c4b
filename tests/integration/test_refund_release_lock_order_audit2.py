"""Found by the review of 76c3003 (a split decision locks both parties' wallets in id order first): the same crossing
of lock orders is in a sibling path the fix left out. A step the buyer takes (here the confirmation) first applies a
refund deadline that has passed (``trades._catch_up``): the seller's silence agreed to a refund without return, so the
step refunds the buyer (the escrow and the buyer's wallet locked) and then releases the rest to the seller (the seller's
wallet locked), in one transaction. A payment from the seller to the buyer meanwhile takes the two wallets in id order:
when the seller's is the older one, each waits on the other until PostgreSQL breaks the deadlock (after its
deadlock_timeout, a second) and the transaction it picked runs again. PostgreSQL only."""

from __future__ import annotations

import pytest

from tests.api.escrow_helpers import books_clean, escrow_balance, paid_and_shipped, parties_by_wallet_age, trade
from tests.integration.test_escrow_races import post
from tests.integration.test_money_races_audit import count, first_pauses_inside, money, retries_recorded
from tests.pg_races import postgres_only  # noqa: F401 - the autouse skip on SQLite
from wallet import trades
from wallet.models import Transfer

pytestmark = pytest.mark.postgres

PRICE = 20900  # ``open_trade``'s amount and shipping fee


@pytest.mark.parametrize("older_wallet", ["seller", "buyer"])
def test_a_confirmation_that_pays_a_refund_by_silence_first_as_the_seller_pays_the_buyer_moves_both_once(
        api, app, clock, monkeypatch, older_wallet):
    buyer, seller = parties_by_wallet_age(api, older_wallet)
    trade_id = paid_and_shipped(api, buyer, seller)
    status, refund = post(app, buyer, f"/api/v1/trades/{trade_id}/refunds", amount=5000, reason="scratched")
    assert status == 201, refund
    clock.advance(days=5, seconds=1)  # the seller's silence has agreed (no goods to come back): the refund is due
    api.relogin(buyer)
    api.relogin(seller)
    retried = retries_recorded(monkeypatch)
    first, second, waited = first_pauses_inside(
        monkeypatch, trades, "_release_to_seller",
        lambda: money(app, buyer, f"/api/v1/trades/{trade_id}/confirm", "confirm"),
        lambda: money(app, seller, "/api/v1/transfers", "to-buyer", amount=700, to_phone=buyer["phone"]))
    assert waited  # the payment queued on the buyer's wallet the confirmation holds
    assert first[0] == 200, first
    assert second[0] == 201, second
    assert "40P01" not in retried, retried  # no deadlock broken (and a second lost) on the way
    body = trade(api, buyer, trade_id)
    assert (body["status"], body["refunded_amount"], body["released_amount"]) == ("TRADE_FINISHED", 5000,
                                                                                 PRICE - 5000)
    assert count(app, Transfer, Transfer.kind == "payment") == 1
    assert api.balance(buyer) == 50000 - PRICE + 5000 + 700
    assert api.balance(seller) == 50000 + PRICE - 5000 - 700
    assert escrow_balance(app, trade_id) == 0
    books_clean(app)
