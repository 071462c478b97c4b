"""What ``LOGIN_LIMIT_PER_PHONE`` and ``LOGIN_LIMIT_PER_CLIENT`` count, as the README's configuration table says (found
by the docs audit: it said "login, registration and refresh attempts per client address", one budget by its words,
and "login attempts per phone"; each endpoint keeps a count of its own, and password recovery is limited by both)."""

from pathlib import Path

from app import create_app
from core.db import db
from tests.api.test_rate_limits import fresh_ipv6_client
from tests.documented_errors import watch
from tests.factories import make_phone

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def limited(database_url, clock, tmp_path, **limits):
    app = create_app({"DATABASE_URL": database_url, "WALLET_ENV": "test", "CLOCK": clock, "RATELIMIT_ENABLED": True,
                      "RATELIMIT_STORAGE_URI": "memory://", "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"), **limits})
    watch(app)  # its 4xx problems must be documented (tests.documented_errors)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = fresh_ipv6_client()
    return app, client


def login(phone):
    return {"phone": phone, "login_password": "whatever it is", "device_id": "d"}


def recovery(phone):
    return {"phone": phone, "sms_code": "123456", "new_password": "a long new password"}


def test_logins_and_recoveries_of_one_number_are_limited_each_on_its_own(database_url, clock, tmp_path):
    app, client = limited(database_url, clock, tmp_path, LOGIN_LIMIT_PER_PHONE="2 per hour")
    phone = make_phone()
    recoveries = [client.post("/api/v1/password-resets", json=recovery(phone)).status_code for _ in range(3)]
    logins = [client.post("/api/v1/sessions", json=login(phone)).status_code for _ in range(3)]
    assert (recoveries[2], logins) == (429, [401, 401, 429])
    with app.app_context():
        db.engine.dispose()


def test_each_credential_endpoint_has_its_own_count_per_client(database_url, clock, tmp_path):
    app, client = limited(database_url, clock, tmp_path, LOGIN_LIMIT_PER_CLIENT="1 per hour")
    first = [client.post("/api/v1/sessions", json=login(make_phone())).status_code,
             client.post("/api/v1/users", json={"phone": make_phone(), "sms_code": "123456"}).status_code,
             client.post("/api/v1/sessions/refresh", json={"refresh_token": "rt_x", "device_id": "d"}).status_code,
             client.post("/api/v1/password-resets", json=recovery(make_phone())).status_code]
    assert 429 not in first
    assert client.post("/api/v1/sessions", json=login(make_phone())).status_code == 429
    with app.app_context():
        db.engine.dispose()


def test_the_readme_says_what_the_login_limits_count():
    rows = {name: row for name, row in
            (line.split(" | ", 1) for line in README.splitlines() if line.startswith("| `LOGIN_LIMIT_PER_"))}
    assert "recover" in rows["| `LOGIN_LIMIT_PER_PHONE`"] and "recover" in rows["| `LOGIN_LIMIT_PER_CLIENT`"]
    assert all("each counted on its own" in row for row in rows.values())
