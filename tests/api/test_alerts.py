"""GET /api/v1/me/alerts: my own SMS alerts with their delivery status, newest first, by cursor."""

from __future__ import annotations

import time

from core.db import run_in_transaction
from notifications import dispatcher
from notifications.models import REDACTED
from notifications.outbox import enqueue
from notifications.templates import mask_phone
from tests.factories import LOGIN_PASSWORD, make_phone


def alerts(api, headers, **query):
    with api.client.application.app_context():
        dispatcher.expand()  # a dispatcher's first step, before it sends anything: events become listed alerts
    response = api.client.get("/api/v1/me/alerts", headers=headers, query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def add_alerts(app, user_id: str, phone: str, n: int) -> None:
    """``n`` alerts for CNY 1.00, 2.00, ... one per transaction (ids order by the millisecond)."""
    with app.app_context():
        for i in range(n):
            time.sleep(0.002)
            run_in_transaction(lambda i=i: enqueue(phone, "transfer_received", locale="en", user_id=user_id,
                                                   payer="a friend", amount=100 * (i + 1), time="now"))


def test_i_see_my_alerts_newest_first_with_their_status(api, app):
    me = api.register(locale="en")
    add_alerts(app, me["user"]["id"], me["phone"], 2)

    page = alerts(api, me["headers"])
    events = [a["event"] for a in page["data"]]
    assert events == ["transfer_received", "transfer_received", "registered"]
    assert [a["id"] for a in page["data"]] == sorted((a["id"] for a in page["data"]), reverse=True)
    newest = page["data"][0]
    assert newest["body"] == "[EscrowWallet] a friend sent you CNY 2.00 at now; it is in your balance."
    assert newest["status"] in ("pending", "sent")
    assert newest["to"] == mask_phone(me["phone"])
    assert set(newest) == {"id", "event", "to", "body", "status", "created_at", "sent_at"}
    assert page["has_more"] is False and page["next_starting_after"] is None


def test_status_and_sent_time_follow_the_dispatcher(api, app, clock):
    me = api.register()
    add_alerts(app, me["user"]["id"], me["phone"], 1)
    assert alerts(api, me["headers"])["data"][0]["status"] == "pending"
    with app.app_context():
        dispatcher.dispatch_all(app.extensions["sms_sender"])
    newest = alerts(api, me["headers"])["data"][0]
    assert newest["status"] == "sent"
    assert newest["sent_at"] == clock.now().isoformat().replace("+00:00", "Z")


def test_i_never_see_another_users_alerts(api, app):
    me, other = api.register(), api.register()
    add_alerts(app, other["user"]["id"], other["phone"], 3)
    mine = alerts(api, me["headers"], limit=100)["data"]
    theirs = alerts(api, other["headers"], limit=100)["data"]
    assert [a["event"] for a in mine] == ["registered"]
    assert len(theirs) == 4
    assert not {a["id"] for a in mine} & {a["id"] for a in theirs}
    assert all(other["phone"][-4:] not in a["to"] for a in mine)


def test_pages_walk_every_alert_once_by_cursor(api, app):
    me = api.register()
    add_alerts(app, me["user"]["id"], me["phone"], 6)
    seen, cursor = [], None
    while True:
        query = {"limit": 3} | ({"starting_after": cursor} if cursor else {})
        page = alerts(api, me["headers"], **query)
        seen += [a["id"] for a in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_starting_after"]
        assert cursor == page["data"][-1]["id"]
    assert len(seen) == 7 == len(set(seen))
    assert seen == sorted(seen, reverse=True)


def test_a_one_time_code_is_never_shown_not_even_before_it_is_sent(api, app):
    """Someone holding a stolen access token must not read the code that would reset the password."""
    me = api.register()
    response = api.client.post("/api/v1/sms-codes", json={"phone": me["phone"], "purpose": "recover"})
    assert response.status_code == 202
    page = alerts(api, me["headers"])
    code_alert = page["data"][0]
    assert code_alert["event"] == "sms_code" and code_alert["status"] == "pending"
    assert code_alert["body"] == REDACTED
    code = api.inbox.last_code(me["phone"])  # the phone itself did receive it
    assert code not in str(alerts(api, me["headers"]))


def test_alerts_need_a_login(api):
    response = api.client.get("/api/v1/me/alerts")
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"


def test_a_bad_limit_is_a_validation_error(api):
    me = api.register()
    response = api.client.get("/api/v1/me/alerts", headers=me["headers"], query_string={"limit": 0})
    assert response.status_code == 422
    assert response.json["code"] == "validation_failed"


def test_an_alert_not_yet_sent_when_the_phone_changes_goes_to_the_number_it_was_written_for(api, app, inbox):
    """An alert keeps the number its owner had when it was written: a phone change before the dispatcher sends it
    does not redirect it (the old number is the one the event concerned, and it is told of the change too)."""
    me = api.register(locale="en")
    old, new = me["phone"], make_phone()
    code = api.code(new, "change_phone")
    add_alerts(app, me["user"]["id"], old, 1)  # still in the outbox when the phone changes
    response = api.client.put("/api/v1/me/phone", headers=me["headers"],
                              json={"new_phone": new, "sms_code": code, "login_password": LOGIN_PASSWORD})
    assert response.status_code == 204, response.json

    assert [m["event"] for m in inbox.messages(to=old)][-2:] == ["transfer_received", "phone_changed_old"]
    assert [m["event"] for m in inbox.messages(to=new)] == ["sms_code", "phone_changed_new"]
    listed = {a["event"]: a for a in alerts(api, me["headers"], limit=100)["data"]}
    assert listed["transfer_received"]["to"] == mask_phone(old) and listed["transfer_received"]["status"] == "sent"
    assert listed["phone_changed_new"]["to"] == mask_phone(new)
