"""A release refunds nothing, and a decision may name what it refunds (the field's own description): a staff client
that sent ``refund_amount: 0`` with a release (the figure a decided release then shows) was refused 422 by the
schema's ``gt=0``, though the decision it names is a valid one. Zero is taken with a release, and still malformed
(``validation_failed``, as before) with a split or a refund."""

import pytest

from tests.api.escrow_helpers import books_clean, disputed, paid_and_shipped
from tests.api.test_dispute_decisions_audit import _decide


@pytest.fixture
def people(api):
    buyer = api.verified(real_name="李四")
    api.money("/api/v1/topups", buyer, amount=500000, bank_card_id=buyer["card_id"])
    return buyer, api.verified(real_name="王五")


@pytest.fixture
def staff(api, app):
    from tests.api.escrow_helpers import grant_staff

    return grant_staff(api, app)


def test_a_release_that_names_its_zero_refund_is_decided(api, app, people, staff):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    decided = _decide(api, staff, dispute["id"], outcome="release", refund_amount=0)
    assert decided.status_code == 200, decided.json
    assert (decided.json["outcome"], decided.json["refund_amount"]) == ("release", 0)
    assert (api.balance(buyer), api.balance(seller)) == (500000 - 20900, 20900)
    books_clean(app)


@pytest.mark.parametrize("outcome", ["split", "refund"])
def test_a_zero_refund_is_still_malformed_where_the_outcome_refunds_something(api, people, staff, outcome):
    buyer, seller = people
    trade_id = paid_and_shipped(api, buyer, seller)
    _refund, dispute = disputed(api, buyer, seller, trade_id)
    refused = _decide(api, staff, dispute["id"], outcome=outcome, refund_amount=0)
    assert (refused.status_code, refused.json["code"]) == (422, "validation_failed"), refused.json
