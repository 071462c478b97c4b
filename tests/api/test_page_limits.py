"""Every cursor-paginated list writes its page size into the SQL (limit + 1, to see whether more remain) instead of
binding it: with an unknown LIMIT, PostgreSQL re-plans a prepared page query on every run once the table is
large (core.pagination). The statement page has its own test in test_funds."""

from __future__ import annotations

import pytest

from notifications import dispatcher
from tests.statements import selects_sent


def page_selects(app, api, path, headers) -> list[str]:
    with app.app_context():
        dispatcher.expand()  # the codes' events become alerts, as a dispatcher's first step does
    with selects_sent(app) as selects:
        response = api.client.get(path, headers=headers)
    assert response.status_code == 200, response.json
    assert len(response.json["data"]) == 2 and response.json["has_more"]
    return selects


@pytest.mark.parametrize("path", ["/api/v1/trades?limit=2", "/api/v1/trades?limit=2&role=buyer",
                                  "/api/v1/me/alerts?limit=2"])
def test_a_list_page_carries_its_limit_in_the_sql(app, api, path):
    buyer, seller = api.register(), api.verified()
    for title in ("one", "two", "three"):
        opened = api.client.post("/api/v1/trades", headers=buyer["headers"],
                                 json={"seller_phone": seller["phone"], "title": title, "amount": 100})
        assert opened.status_code == 201, opened.json
    api.inbox.messages()  # deliver the registration SMS: the buyer has alerts to list
    api.client.post("/api/v1/sms-codes", json={"phone": buyer["phone"], "purpose": "login"})
    api.client.post("/api/v1/sms-codes", json={"phone": buyer["phone"], "purpose": "recover"})
    selects = page_selects(app, api, path, buyer["headers"])
    assert [s for s in selects if " LIMIT 3" in s], selects  # SQLite adds a bound OFFSET after it
