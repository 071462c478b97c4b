"""Found by a privacy audit: /metrics, served to anyone, told a stranger which phone numbers have accounts."""

from notifications import dispatcher
from tests.factories import make_phone

WRONG = "definitely not it"


def lock_events(client, headers=None):
    """The lock-event gauges /metrics shows this caller (none when it is not served to them), once a dispatcher has
    expanded the changes' events into alerts (the gauges count lock alerts)."""
    with client.application.app_context():
        dispatcher.expand()
    response = client.get("/metrics", headers=headers or {})
    if response.status_code != 200:
        return {}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in response.get_data(as_text=True).splitlines() if line.startswith("wallet_lock_events{")}


def test_metrics_do_not_tell_a_stranger_which_locked_number_has_an_account(app, api):
    """Three wrong logins lock a number whether or not it has an account, so the answers cannot tell them apart
    (DESIGN 4.2); but /metrics, served to anyone, counted the lock only for a real account (from its lock alert): a
    stranger who locked a number and read /metrics before and after learnt whether it is registered."""
    app.config["METRICS_TOKEN"] = "scrape-secret"
    seen = {}
    for name, phone in (("registered", api.register()["phone"]), ("unregistered", make_phone())):
        before = lock_events(api.client)
        assert [api.login(phone, WRONG).status_code for _ in range(3)] == [401, 401, 423]
        after = lock_events(api.client)
        seen[name] = {series: after[series] - before.get(series, 0) for series in after}
    assert seen["registered"] == seen["unregistered"], seen


def test_metrics_answer_the_scraper_that_holds_the_token(app, api):
    app.config["METRICS_TOKEN"] = "scrape-secret"
    scraper = {"Authorization": "Bearer scrape-secret"}
    before = lock_events(api.client, scraper)
    phone = api.register()["phone"]
    assert [api.login(phone, WRONG).status_code for _ in range(3)] == [401, 401, 423]
    assert lock_events(api.client, scraper)['wallet_lock_events{kind="login"}'] == \
        before.get('wallet_lock_events{kind="login"}', 0) + 1
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret"}):
        refused = api.client.get("/metrics", headers=headers)
        assert refused.status_code == 404 and b"wallet_" not in refused.data


def test_metrics_are_not_served_in_production_without_a_token(app, api):
    app.config["WALLET_ENV"] = "production"
    app.config["METRICS_TOKEN"] = ""
    assert api.client.get("/metrics").status_code == 404
