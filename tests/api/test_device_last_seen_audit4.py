"""A device's ``last_seen_at`` (GET /api/v1/devices) is when it last used its session, not when it last typed the
login password: an app keeps its session by refreshing, so the owner's phone read as unseen since it registered, and a
stolen session refreshed every quarter hour read as a device long gone (found by the time audit)."""

from datetime import timedelta


def _devices(api, account):
    response = api.client.get("/api/v1/devices", headers=account["headers"])
    assert response.status_code == 200, response.json
    return {device["id"]: device for device in response.json["data"]}


def _refresh(api, account, device_id="phone-1"):
    response = api.client.post("/api/v1/sessions/refresh",
                               json={"refresh_token": account["refresh_token"], "device_id": device_id})
    assert response.status_code == 200, response.json
    account["refresh_token"] = response.json["refresh_token"]
    account["headers"] = api.bearer(response.json["access_token"])


def test_a_device_that_refreshes_its_session_is_seen_at_its_refresh(api, clock):
    account = api.register()
    registered = clock.now()
    clock.advance(days=3, minutes=7, microseconds=250)
    _refresh(api, account)
    [device] = _devices(api, account).values()
    assert device["created_at"] == registered.isoformat().replace("+00:00", "Z")
    assert device["last_seen_at"] == clock.now().isoformat().replace("+00:00", "Z")


def test_only_the_device_that_refreshed_is_seen_again(api, clock):
    account = api.register()
    other = api.login(account["phone"], device_id="tablet", sms_code=api.code(account["phone"], "login"))
    assert other.status_code == 201, other.json
    tablet = {"refresh_token": other.json["refresh_token"], "headers": api.bearer(other.json["access_token"])}
    logged_in = clock.now()
    clock.advance(hours=5)
    _refresh(api, tablet, device_id="tablet")
    seen = {device["current"]: device["last_seen_at"] for device in _devices(api, tablet).values()}
    assert seen == {True: clock.now().isoformat().replace("+00:00", "Z"),
                    False: logged_in.isoformat().replace("+00:00", "Z")}


def test_a_refused_refresh_does_not_count_as_seeing_the_device(api, clock):
    account = api.register()
    registered = clock.now()
    clock.advance(days=31)  # the refresh token has expired
    refused = api.client.post("/api/v1/sessions/refresh",
                              json={"refresh_token": account["refresh_token"], "device_id": "phone-1"})
    assert refused.status_code == 401, refused.json
    account = api.relogin(account)
    clock.advance(timedelta(seconds=1))
    [device] = _devices(api, account).values()
    assert device["last_seen_at"] == (registered + timedelta(days=31)).isoformat().replace("+00:00", "Z")
