"""Pooled connections are not pinged before use. When PostgreSQL drops them (a restart, a failover, an idle
timeout), the first statement on each finds out, and a transaction that lost its connection before COMMIT runs
again on a fresh one: no request fails for it, reads and writes alike. A database that cannot be reached at all
is a 503 the client may retry, never a 500."""

import pytest
from sqlalchemy import create_engine, text

from core.db import db
from tests.factories import make_phone


def drop_the_pools_connections(app) -> int:
    """Terminate every other backend of the test database, as a PostgreSQL restart would."""
    admin = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        ended = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                  " WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    admin.dispose()
    return ended


@pytest.fixture
def pg_app(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL)")
    return app


@pytest.mark.postgres
def test_a_read_after_the_pools_connections_were_dropped_succeeds(pg_app, api):
    account = api.register()
    assert api.client.get("/api/v1/wallet", headers=account["headers"]).status_code == 200
    assert drop_the_pools_connections(pg_app) >= 1
    response = api.client.get("/api/v1/wallet", headers=account["headers"])
    assert response.status_code == 200, response.json


@pytest.mark.postgres
def test_a_write_after_the_pools_connections_were_dropped_succeeds_once(pg_app, api):
    account = api.register()
    assert drop_the_pools_connections(pg_app) >= 1
    response = api.login(account["phone"])  # a read, then a transaction that opens a session
    assert response.status_code == 201, response.json
    assert drop_the_pools_connections(pg_app) >= 1
    code = api.client.post("/api/v1/sms-codes", json={"phone": make_phone(), "purpose": "register"})
    assert code.status_code == 202, code.json
    with pg_app.app_context():
        sessions = db.session.execute(text("SELECT count(*) FROM auth_sessions s JOIN users u ON u.id = s.user_id"
                                           " WHERE u.phone = :p"), {"p": account["phone"]}).scalar()
    assert sessions == 2  # registration's and the one login's: the retried transaction committed once


def test_an_unreachable_database_is_a_503_with_retry_after(tmp_path):
    from app import create_app

    dead = create_app({"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing", "WALLET_ENV": "test",
                       "RATELIMIT_ENABLED": False, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    response = dead.test_client().get("/api/v1/wallet", headers={"Authorization": "Bearer at_whatever"})
    assert response.status_code == 503, response.json
    assert response.json["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"


def test_metrics_answer_while_the_database_cannot_be_reached(tmp_path):
    """Found by an audit: /metrics answered 503 during an outage, so the request latencies an operator looks at then
    were missing too. Now the database's gauges are left out and wallet_database_up says why."""
    from app import create_app

    dead = create_app({"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing", "WALLET_ENV": "test",
                       "RATELIMIT_ENABLED": False, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    client = dead.test_client()
    assert client.get("/readyz").status_code == 503
    response = client.get("/metrics")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "wallet_database_up 0.0" in body
    assert 'wallet_http_request_duration_seconds_count{endpoint="/readyz"' in body
    assert "wallet_outbox_alerts" not in body


def test_metrics_say_the_database_is_up_when_it_is(client):
    assert "wallet_database_up 1.0" in client.get("/metrics").get_data(as_text=True)


def test_metrics_answer_on_a_database_not_yet_migrated(scratch_url, tmp_path):
    """Found by an audit: on a new PostgreSQL database, before `flask db upgrade`, every scrape was a 500 (the outbox
    gauge's table missing: a programming error, where SQLite's "no such table" is an operational one). Now it is
    answered as while the database cannot be reached: the latencies, and wallet_database_up 0."""
    from app import create_app

    empty = create_app({"DATABASE_URL": scratch_url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False,
                        "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    client = empty.test_client()
    assert client.get("/readyz").json["code"] == "database_not_migrated"
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    body = response.get_data(as_text=True)
    assert "wallet_database_up 0.0" in body
    assert 'wallet_http_request_duration_seconds_count{endpoint="/readyz"' in body
    with empty.app_context():
        db.engine.dispose()


@pytest.mark.postgres
def test_metrics_after_the_pools_connections_were_dropped_say_the_database_is_up(pg_app, client):
    """Found by a review: the outbox's status read on a pooled connection of its own without the retry a block has,
    so the first scrape of each process after a PostgreSQL restart said wallet_database_up 0."""
    assert "wallet_database_up 1.0" in client.get("/metrics").get_data(as_text=True)
    assert drop_the_pools_connections(pg_app) >= 1
    body = client.get("/metrics").get_data(as_text=True)
    assert "wallet_database_up 1.0" in body
    assert "wallet_outbox_alerts" in body
