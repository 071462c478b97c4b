"""The reads that authenticate in their own statement (``security.auth.CALLER``: the token's check joined to the read,
``core.sql.Joined``) refuse exactly what every other endpoint refuses, and show a caller only what is theirs."""

from __future__ import annotations

import pytest

from core import sql
from core.errors import NotFound
from security import accounts

WRONG = "definitely not it"

READS = ["/api/v1/wallet", "/api/v1/wallet/transactions", "/api/v1/trades/{trade}", "/api/v1/trades",
         "/api/v1/me/alerts", "/api/v1/me"]


@pytest.fixture
def trade_of(api):
    """A buyer with money and a trade with a seller; the paths above filled in for them."""
    buyer, seller = api.verified(), api.verified()
    api.money("/api/v1/topups", buyer, amount=5000, bank_card_id=buyer["card_id"])
    opened = api.client.post("/api/v1/trades", headers=buyer["headers"],
                             json={"seller_phone": seller["phone"], "title": "lamp", "amount": 1999})
    assert opened.status_code == 201, opened.json
    return buyer, seller, opened.json["id"]


def get(api, path: str, trade_id: str, headers: dict[str, str]):
    return api.client.get(path.format(trade=trade_id), headers=headers)


@pytest.mark.parametrize("path", READS)
def test_a_joined_read_refuses_a_missing_unknown_or_refresh_token(api, trade_of, path):
    buyer, _seller, trade_id = trade_of
    assert get(api, path, trade_id, buyer["headers"]).status_code == 200
    for headers in ({}, {"Authorization": "Basic abc"}, api.bearer("not-a-token"),
                    api.bearer(buyer["refresh_token"])):
        response = get(api, path, trade_id, headers)
        assert (response.status_code, response.json["code"]) == (401, "unauthenticated"), headers


@pytest.mark.parametrize("path", READS)
def test_a_joined_read_refuses_an_expired_or_logged_out_token(api, trade_of, clock, path):
    buyer, seller, trade_id = trade_of
    assert api.client.delete("/api/v1/sessions/current", headers=seller["headers"]).status_code == 204
    if "trades" in path:  # the seller is a party: only the token stands in the way
        assert get(api, path, trade_id, seller["headers"]).status_code == 401
    clock.advance(minutes=15)
    assert get(api, path, trade_id, buyer["headers"]).status_code == 401
    assert get(api, path, trade_id, api.relogin(buyer)["headers"]).status_code == 200


@pytest.mark.parametrize("path", READS)
def test_a_joined_read_goes_on_under_a_login_lock_a_stranger_made(api, trade_of, path):
    """A login lock stops logging in with the password, not the sessions the owner holds (``security.auth``)."""
    buyer, _seller, trade_id = trade_of
    assert [api.login(buyer["phone"], WRONG).status_code for _ in range(3)] == [401, 401, 423]
    assert get(api, path, trade_id, buyer["headers"]).status_code == 200


def test_each_caller_reads_only_their_own_wallet_statement_and_profile(api, trade_of):
    buyer, seller, _trade_id = trade_of
    stranger = api.register()
    assert api.client.get("/api/v1/wallet", headers=buyer["headers"]).json["available"] == 5000
    assert api.client.get("/api/v1/wallet", headers=seller["headers"]).json["available"] == 0
    assert api.client.get("/api/v1/wallet", headers=stranger["headers"]).json["available"] == 0
    lines = api.client.get("/api/v1/wallet/transactions", headers=buyer["headers"]).json["data"]
    assert [(line["kind"], line["amount"]) for line in lines] == [("topup", 5000)]
    for other in (seller, stranger):
        assert api.client.get("/api/v1/wallet/transactions", headers=other["headers"]).json["data"] == []
    for account in (buyer, seller, stranger):
        profile = api.client.get("/api/v1/me", headers=account["headers"]).json
        assert (profile["id"], profile["phone"]) == (account["user"]["id"], account["phone"])


def test_a_trade_is_read_by_its_parties_and_staff_and_is_not_found_for_anyone_else(api, app, trade_of):
    buyer, seller, trade_id = trade_of
    path = f"/api/v1/trades/{trade_id}"
    assert api.client.get(path, headers=buyer["headers"]).json["role"] == "buyer"
    assert api.client.get(path, headers=seller["headers"]).json["role"] == "seller"
    staff = api.register()
    stranger = api.client.get(path, headers=staff["headers"])
    assert (stranger.status_code, stranger.json["code"]) == (404, "not_found")
    assert app.test_cli_runner().invoke(args=["users", "grant-staff", staff["phone"]]).exit_code == 0
    assert api.client.get(path, headers=staff["headers"]).json["role"] == "staff"


@pytest.mark.parametrize("path", ["/api/v1/wallet/transactions?limit=0", "/api/v1/trades?limit=abc",
                                  "/api/v1/me/alerts?limit=101"])
def test_a_request_without_a_token_is_refused_as_such_before_its_query_is_judged(api, path):
    assert api.client.get(path).status_code == 401
    account = api.register()
    response = api.client.get(path, headers=account["headers"])
    assert (response.status_code, response.json["code"]) == (422, "validation_failed")


def test_a_trade_list_shows_the_callers_own_trades_in_their_role(api, trade_of):
    buyer, seller, trade_id = trade_of
    stranger = api.register()
    as_buyer = api.client.get("/api/v1/trades", headers=buyer["headers"]).json["data"]
    as_seller = api.client.get("/api/v1/trades?role=seller", headers=seller["headers"]).json["data"]
    assert [(t["id"], t["role"]) for t in as_buyer] == [(trade_id, "buyer")]
    assert [(t["id"], t["role"]) for t in as_seller] == [(trade_id, "seller")]
    assert api.client.get("/api/v1/trades?role=seller", headers=buyer["headers"]).json["data"] == []
    assert api.client.get("/api/v1/trades", headers=stranger["headers"]).json["data"] == []


def test_a_profile_read_for_an_account_that_does_not_exist_is_not_found(app):
    with app.app_context(), pytest.raises(NotFound):
        accounts.profile(sql.Viewing("usr_nobody"))
