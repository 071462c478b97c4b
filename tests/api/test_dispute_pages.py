"""The staff's dispute list is cursor-paginated (DESIGN 7: "Lists use cursor pagination (`limit`, `starting_after`,
`has_more`)"). Found by an audit: it was the newest 200, and nothing said the rest were out of reach."""

from __future__ import annotations

from sqlalchemy import select

from core.db import db
from tests.api.escrow_helpers import grant_staff
from tests.api.test_escrow_stories import PP, act, open_trade
from wallet.escrow_models import Dispute


def _one_decided_dispute(api, app, people, staff):
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key=f"p-{trade_id}", **PP).status_code == 200
    assert act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF1").status_code == 200
    refund = act(api, buyer, trade_id, "refunds", amount=100, reason="broken")
    assert act(api, seller, trade_id, f"refunds/{refund.json['id']}/refuse", reason="no").status_code == 200
    dispute = act(api, buyer, trade_id, "disputes", reason="help")
    assert dispute.status_code == 201, dispute.json
    decided = api.client.post(f"/api/v1/admin/disputes/{dispute.json['id']}/decide", headers=staff["headers"],
                              json={"outcome": "release", "reason": "ok"})
    assert decided.status_code == 200, decided.json
    return dispute.json["id"]


def test_the_staff_dispute_list_takes_limit_and_says_has_more(api, app, people):
    staff = grant_staff(api, app)
    first, second = _one_decided_dispute(api, app, people, staff), _one_decided_dispute(api, app, people, staff)
    page = api.client.get("/api/v1/admin/disputes?status=decided&limit=1", headers=staff["headers"]).json
    assert ([d["id"] for d in page["data"]], page["has_more"], page["next_starting_after"]) == ([second], True, second)
    rest = api.client.get(f"/api/v1/admin/disputes?status=decided&limit=1&starting_after={second}",
                          headers=staff["headers"]).json
    assert ([d["id"] for d in rest["data"]], rest["has_more"], rest["next_starting_after"]) == ([first], False, None)
    assert api.client.get("/api/v1/admin/disputes?limit=101", headers=staff["headers"]).status_code == 422


def test_the_staff_dispute_list_never_silently_drops_disputes_past_200(api, app, people):
    staff = grant_staff(api, app)
    oldest = _one_decided_dispute(api, app, people, staff)
    with app.app_context():
        real = db.session.scalar(select(Dispute).where(Dispute.id == oldest))
        columns = {c.key: getattr(real, c.key) for c in Dispute.__table__.columns}
        for n in range(200):  # 200 newer decided disputes (ids sort after the real one)
            db.session.add(Dispute(**{**columns, "id": f"dsp_zz{n:024d}"}))
        db.session.commit()
    seen: list[str] = []
    path = "/api/v1/admin/disputes?status=decided"
    response = api.client.get(path, headers=staff["headers"])
    assert response.status_code == 200, response.json
    seen += [d["id"] for d in response.json["data"]]
    while response.json.get("has_more"):
        response = api.client.get(f"{path}&starting_after={response.json['next_starting_after']}",
                                  headers=staff["headers"])
        seen += [d["id"] for d in response.json["data"]]
    assert len(seen) == 201 and oldest in seen, f"staff can see {len(seen)} of 201 decided disputes"



def test_staff_list_every_dispute_with_status_all(api, app, people):
    """Found by an audit: the document offered a null status ("all") that no query string can carry, so every way
    of asking for all disputes was refused. ``status=all`` lists open and decided ones alike."""
    staff = grant_staff(api, app)
    decided = _one_decided_dispute(api, app, people, staff)
    buyer, seller = people
    trade_id = open_trade(api, buyer, seller)
    assert act(api, buyer, trade_id, "pay", key="p-open", **PP).status_code == 200
    assert act(api, seller, trade_id, "ship", carrier="SF", tracking_number="SF2").status_code == 200
    refund = act(api, buyer, trade_id, "refunds", amount=100, reason="broken")
    assert act(api, seller, trade_id, f"refunds/{refund.json['id']}/refuse", reason="no").status_code == 200
    still_open = act(api, buyer, trade_id, "disputes", reason="help").json["id"]
    listed = {status: [d["id"] for d in api.client.get(f"/api/v1/admin/disputes?status={status}",
                                                        headers=staff["headers"]).json["data"]]
              for status in ("all", "open", "decided")}
    assert listed == {"all": [still_open, decided], "open": [still_open], "decided": [decided]}
    assert api.client.get("/api/v1/admin/disputes?status=null", headers=staff["headers"]).status_code == 422
