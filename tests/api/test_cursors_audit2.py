"""Cursors a list did not hand out: another list's ids and truncated ids (found by the access audit).

``core.pagination`` promises that a cursor is the id of an item of the page before and that anything else is refused
(422), never read as a position somewhere in the list. Every list took any ``prefix_`` and 1-58 characters, so the id
of a trade given to the alert list answered the first page again (``sms_`` sorts before ``trd_``: every alert is
"older"), a trade id given to the card list an empty last page, and a cursor cut short (``trd_01``, a copy-and-paste
or a truncated URL) an empty page with ``has_more`` false: the client looped or stopped early, never told.
"""

from tests.api.escrow_helpers import disputed, grant_staff, paid_and_shipped


def test_a_cursor_of_another_list_or_cut_short_is_refused_not_read_as_a_position(api, app, people):
    buyer, seller = people
    staff = grant_staff(api, app)
    trade_id = paid_and_shipped(api, buyer, seller)
    _, dispute = disputed(api, buyer, seller, trade_id)
    device = api.client.get("/api/v1/devices", headers=buyer["headers"]).json["data"][0]["id"]
    alert = api.client.get("/api/v1/me/alerts", headers=buyer["headers"]).json["data"][0]["id"]
    ids = {"/api/v1/trades": trade_id, "/api/v1/me/alerts": alert, "/api/v1/devices": device,
           "/api/v1/me/bank-cards": buyer["card_id"], "/api/v1/admin/disputes": dispute["id"]}
    for path, own in ids.items():
        who = staff if path.startswith("/api/v1/admin") else buyer
        # its own kind of id is a cursor
        assert api.client.get(f"{path}?starting_after={own}", headers=who["headers"]).status_code == 200, path
        others = [other for other_path, other in ids.items() if other_path != path]
        for cursor in [*others, own[:6], own[:-1], own + "0"]:
            response = api.client.get(f"{path}?starting_after={cursor}", headers=who["headers"])
            assert response.status_code == 422, (path, cursor, response.json)
            assert response.json["code"] == "validation_failed"
            assert [error["field"] for error in response.json["errors"]] == ["starting_after"], (path, cursor)
