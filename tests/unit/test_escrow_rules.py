from datetime import UTC, datetime, timedelta

import pytest

from wallet import escrow as e

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
POLICY = e.Policy()


@pytest.mark.parametrize(
    ("status", "action", "target"),
    [
        (e.WAIT_BUYER_PAY, "pay", e.WAIT_SELLER_SEND_GOODS),
        (e.WAIT_BUYER_PAY, "cancel", e.TRADE_CLOSED),
        (e.WAIT_BUYER_PAY, "expire", e.TRADE_CLOSED),
        (e.WAIT_SELLER_SEND_GOODS, "ship", e.WAIT_BUYER_CONFIRM_GOODS),
        (e.WAIT_SELLER_SEND_GOODS, "refund_all", e.TRADE_CLOSED),
        (e.WAIT_BUYER_CONFIRM_GOODS, "confirm", e.TRADE_FINISHED),
        (e.WAIT_BUYER_CONFIRM_GOODS, "auto_confirm", e.TRADE_FINISHED),
        (e.WAIT_BUYER_CONFIRM_GOODS, "refund_all", e.TRADE_CLOSED),
    ],
)
def test_legal_trade_moves(status, action, target):
    assert e.trade_move(status, action) == target


@pytest.mark.parametrize(
    ("status", "action", "code"),
    [
        (e.WAIT_SELLER_SEND_GOODS, "confirm", "trade_not_confirmable"),  # confirm before ship
        (e.WAIT_BUYER_CONFIRM_GOODS, "ship", "trade_not_shippable"),  # ship twice
        (e.TRADE_CLOSED, "pay", "trade_not_payable"),  # pay a closed trade
        (e.WAIT_SELLER_SEND_GOODS, "pay", "trade_not_payable"),  # pay twice
        (e.WAIT_SELLER_SEND_GOODS, "cancel", "trade_not_cancellable"),  # cancel after payment
        (e.TRADE_FINISHED, "confirm", "trade_not_confirmable"),
        (e.TRADE_FINISHED, "refund_all", "illegal_transition"),
    ],
)
def test_illegal_trade_moves_have_stable_codes(status, action, code):
    with pytest.raises(e.IllegalTransition) as caught:
        e.trade_move(status, action)
    assert caught.value.code == code


@pytest.mark.parametrize("action", ["confirm", "auto_confirm", "extend"])
def test_an_open_refund_blocks_confirming(action):
    with pytest.raises(e.IllegalTransition) as caught:
        e.trade_move(e.WAIT_BUYER_CONFIRM_GOODS, action, refund_open=True)
    assert caught.value.code == "refund_in_progress"


def test_shipping_waits_for_an_open_refund():
    with pytest.raises(e.IllegalTransition):
        e.trade_move(e.WAIT_SELLER_SEND_GOODS, "ship", refund_open=True)


@pytest.mark.parametrize(("status", "after_shipping", "disputed", "closes"), [
    (e.SELLER_REFUSE_BUYER, False, False, True),  # refused before shipping, not escalated: shipping closes it
    (e.SELLER_REFUSE_BUYER, False, True, False),  # the platform is deciding it
    (e.SELLER_REFUSE_BUYER, True, False, False),  # asked after shipping (a shipped trade cannot ship anyway)
    (e.WAIT_SELLER_AGREE, False, False, False),  # not answered yet
])
def test_shipping_closes_only_a_refused_request_made_before_shipping_and_not_disputed(status, after_shipping,
                                                                                       disputed, closes):
    assert e.shipping_closes(status, after_shipping, disputed) is closes
    if closes:
        assert e.refund_move(status, "ship") == e.REFUND_CLOSED


def test_the_confirm_deadline_extends_once():
    deadline = e.confirm_deadline(NOW, POLICY)
    assert deadline == NOW + timedelta(days=10)
    assert e.extended_deadline(deadline, False, POLICY) == NOW + timedelta(days=15)
    with pytest.raises(e.IllegalTransition):
        e.extended_deadline(deadline, True, POLICY)


def test_a_paused_clock_resumes_where_it_stopped():
    deadline = NOW + timedelta(days=10)
    resumed = e.resumed_deadline(deadline, NOW + timedelta(days=2), NOW + timedelta(days=5))
    assert resumed == deadline + timedelta(days=3)


@pytest.mark.parametrize(
    ("status", "action", "return_goods", "target"),
    [
        (e.WAIT_SELLER_AGREE, "agree", False, e.REFUND_SUCCESS),
        (e.WAIT_SELLER_AGREE, "expire", False, e.REFUND_SUCCESS),  # silence counts as agreement
        (e.WAIT_SELLER_AGREE, "agree", True, e.WAIT_BUYER_RETURN_GOODS),
        (e.WAIT_SELLER_AGREE, "refuse", False, e.SELLER_REFUSE_BUYER),
        (e.WAIT_BUYER_RETURN_GOODS, "return", True, e.WAIT_SELLER_CONFIRM_GOODS),
        (e.WAIT_SELLER_CONFIRM_GOODS, "receive", True, e.REFUND_SUCCESS),
        (e.WAIT_SELLER_CONFIRM_GOODS, "expire", True, e.REFUND_SUCCESS),  # silence counts as received
        (e.WAIT_BUYER_RETURN_GOODS, "expire", True, e.REFUND_CLOSED),
        (e.SELLER_REFUSE_BUYER, "expire", False, e.REFUND_CLOSED),
    ],
)
def test_refund_moves(status, action, return_goods, target):
    assert e.refund_move(status, action, return_goods=return_goods) == target


@pytest.mark.parametrize(("status", "action"), [(e.REFUND_SUCCESS, "agree"), (e.SELLER_REFUSE_BUYER, "agree"),
                                                (e.WAIT_SELLER_AGREE, "return"), (e.REFUND_CLOSED, "receive")])
def test_illegal_refund_moves(status, action):
    with pytest.raises(e.IllegalTransition):
        e.refund_move(status, action)


def test_seller_response_deadline_depends_on_shipping():
    assert e.refund_deadline(e.WAIT_SELLER_AGREE, NOW, False, POLICY) == NOW + timedelta(days=2)
    assert e.refund_deadline(e.WAIT_SELLER_AGREE, NOW, True, POLICY) == NOW + timedelta(days=5)
    assert e.refund_deadline(e.WAIT_SELLER_CONFIRM_GOODS, NOW, True, POLICY) == NOW + timedelta(days=10)
    assert e.refund_deadline(e.REFUND_SUCCESS, NOW, True, POLICY) is None


@pytest.mark.parametrize(("amount", "paid", "refunded", "ok"),
                         [(1, 100, 0, True), (100, 100, 0, True), (101, 100, 0, False), (40, 100, 70, False),
                          (30, 100, 70, True), (0, 100, 0, False), (-5, 100, 0, False)])
def test_refunds_never_exceed_what_is_held(amount, paid, refunded, ok):
    if ok:
        e.check_refund_amount(amount, paid, refunded)
    else:
        with pytest.raises(e.IllegalTransition):
            e.check_refund_amount(amount, paid, refunded)


@pytest.mark.parametrize(("amount", "bp", "fee"), [(19900, 0, 0), (19900, 100, 199), (19900, 150, 298), (1, 150, 0)])
def test_seller_fee_rounds_down(amount, bp, fee):
    assert e.seller_fee(amount, bp) == fee


@pytest.mark.parametrize("bp", [-1, 1, 15, 99, 151, 10_000])
def test_a_fee_rate_other_than_none_or_a_merchants_is_refused(bp):
    with pytest.raises(ValueError, match="fee_bp"):
        e.seller_fee(19900, bp)


def test_dispute_splits():
    assert e.split_amounts(1000, None, e.RELEASE) == (0, 1000)
    assert e.split_amounts(1000, None, e.REFUND) == (1000, 0)
    assert e.split_amounts(1000, 300, e.SPLIT) == (300, 700)
    for bad in (None, 0, 1000, 1200):
        with pytest.raises(e.IllegalTransition):
            e.split_amounts(1000, bad, e.SPLIT)


def test_a_refund_amount_given_with_a_release_or_a_refund_must_be_what_it_refunds():
    assert e.split_amounts(1000, 1000, e.REFUND) == (1000, 0)
    for amount, outcome in ((300, e.RELEASE), (1000, e.RELEASE), (300, e.REFUND), (1200, e.REFUND)):
        with pytest.raises(e.IllegalTransition) as refused:
            e.split_amounts(1000, amount, outcome)
        assert refused.value.code == "refund_amount_mismatch"


def test_a_trade_record_has_exactly_the_columns_of_the_trades_table_in_their_order():
    from sqlalchemy import Boolean

    from core.db import UTCDateTime
    from wallet.escrow_models import Trade
    from wallet.trade_store import BOOLEAN_COLUMNS, COLUMNS, UTC_COLUMNS

    table = Trade.__table__
    assert tuple(column.name for column in table.columns) == COLUMNS
    assert set(UTC_COLUMNS) == {c.name for c in table.columns if isinstance(c.type, UTCDateTime)}
    assert set(BOOLEAN_COLUMNS) == {c.name for c in table.columns if isinstance(c.type, Boolean)}


def test_a_clock_stepped_back_never_pulls_a_resumed_deadline_earlier() -> None:
    # The clock paused at 12:00; a host whose clock is an hour behind resumes it "at 11:00". The buyer must not lose
    # the hour: the deadline stays where it was, never moves earlier.
    deadline = NOW + timedelta(days=10)
    paused_at = NOW + timedelta(hours=3)
    assert e.resumed_deadline(deadline, paused_at, paused_at - timedelta(hours=1)) == deadline
    assert e.resumed_deadline(deadline, paused_at, paused_at) == deadline
