"""The trade_finished SMS when the seller pays a merchant fee (R10): the buyer read the seller's net amount (what was
paid less the platform's fee) as what "was paid to the seller", less than the buyer paid and than left escrow; on a
statement that does not match it reads as money gone missing. The buyer now reads what left escrow for the seller,
the seller what reached their wallet."""

from tests.api.test_escrow_stories import PP, act, books_clean, paid_and_shipped, trade


def _finished_texts(api, who):
    return [m["body"] for m in api.inbox.messages(to=who["phone"], event="trade_finished")]


def test_with_a_seller_fee_the_buyer_reads_what_was_paid_and_the_seller_their_net(api, app, people):
    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "150"]).exit_code == 0
    trade_id = paid_and_shipped(api, buyer, seller, amount=20000, shipping_fee=0)
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).status_code == 200
    assert trade(api, seller, trade_id)["fee_amount"] == 300

    [to_buyer] = _finished_texts(api, buyer)
    [to_seller] = _finished_texts(api, seller)
    assert "CNY 200.00 was paid to the seller" in to_buyer, to_buyer
    assert "CNY 197.00 was paid to the seller" in to_seller, to_seller
    books_clean(app)


def test_after_a_partial_refund_the_buyer_reads_what_left_escrow_for_the_seller(api, app, people):
    buyer, seller = people
    assert app.test_cli_runner().invoke(args=["users", "set-fee", seller["phone"], "100"]).exit_code == 0
    trade_id = paid_and_shipped(api, buyer, seller, amount=20000, shipping_fee=1000)
    refund = act(api, buyer, trade_id, "refunds", amount=5000, reason="scratched").json
    assert act(api, seller, trade_id, f"refunds/{refund['id']}/agree", **PP).status_code == 200
    assert act(api, buyer, trade_id, "confirm", key="c", **PP).status_code == 200

    [to_buyer] = _finished_texts(api, buyer)
    [to_seller] = _finished_texts(api, seller)
    assert "CNY 160.00 was paid to the seller" in to_buyer, to_buyer  # 210.00 paid, 50.00 back
    assert "CNY 158.40 was paid to the seller" in to_seller, to_seller  # less 1 %
    books_clean(app)
