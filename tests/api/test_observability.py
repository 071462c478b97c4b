"""Metrics at /metrics and logs that carry the request id."""

import json
import logging
import re

from core.observability import JsonFormatter, RequestIdFilter, TextFormatter
from notifications import dispatcher


def metric(text, name):
    return [line for line in text.splitlines() if line.startswith(name)]


def sample(text, series):
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(series + " ")]
    return float(found[0]) if found else 0.0


LOGINS = 'wallet_http_request_duration_seconds_count{endpoint="/api/v1/sessions",method="POST",status="%s"}'


def test_metrics_show_latency_outbox_locks_and_the_ledger_check(api, app):
    account = api.register()
    before = api.client.get("/metrics").get_data(as_text=True)  # the histogram lives as long as the process
    for _ in range(3):
        api.login(account["phone"], "wrong password!")
    assert app.test_cli_runner().invoke(args=["wallet", "check"]).exit_code == 0
    with app.app_context():
        assert dispatcher.queue_status().by_status["pending"]  # the lock alert, still inside its event
        dispatcher.expand()  # lock events are counted from the lock alerts, which a dispatcher's first step writes
    body = api.client.get("/metrics").get_data(as_text=True)
    assert sample(body, LOGINS % 401) - sample(before, LOGINS % 401) == 2
    assert sample(body, LOGINS % 423) - sample(before, LOGINS % 423) == 1
    assert 'wallet_credentials_locked{kind="login"} 1.0' in body
    assert 'wallet_lock_events{kind="login"} 1.0' in body
    assert metric(body, 'wallet_outbox_alerts{status="pending"}')
    assert metric(body, "wallet_outbox_oldest_unsent_seconds")
    assert "wallet_ledger_check_ok 1.0" in body


def test_json_log_lines_carry_the_request_id(app):
    formatter, request_filter = JsonFormatter(), RequestIdFilter()
    with app.test_request_context("/api/v1/me", headers={"X-Request-ID": "req-42"}):
        app.preprocess_request()
        record = logging.LogRecord("wallet", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        request_filter.filter(record)
        line = json.loads(formatter.format(record))
    assert line["msg"] == "hello world" and line["request_id"] == "req-42" and line["level"] == "INFO"


def test_the_request_id_comes_back_in_a_header(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]) == 32


def test_request_methods_made_up_by_clients_share_one_series(client):
    """Found by an audit: every made-up method name (gunicorn accepts them) became a series of the latency
    histogram, so any client could grow /metrics and the app's memory without bound."""
    for n in range(5):
        client.open("/no/such/path", method=f"XMADEUP{n}")
    client.open("/no/such/path", method="PROPFIND")
    body = client.get("/metrics").get_data(as_text=True)
    methods = set(re.findall(r'wallet_http_request_duration_seconds_count\{[^}]*method="([^"]+)"', body))
    assert "other" in methods and not any(m.startswith("XMADEUP") or m == "PROPFIND" for m in methods), methods
    assert "GET" in methods


def test_a_text_log_line_cannot_be_started_by_a_client(database_url, tmp_path, capfd):
    """Found by an audit: with LOG_FORMAT=text the access line wrote the decoded path as it is, so ``%0A`` in a URL
    started a log line of the client's making (any time, level and request id). Control characters are escaped; a
    request id must be the whole of what it names (a trailing line break got past ``$``)."""
    from app import create_app
    from core.db import db

    app = create_app({"DATABASE_URL": database_url, "WALLET_ENV": "test", "LOG_FORMAT": "text",
                      "RATELIMIT_ENABLED": False, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl")})
    capfd.readouterr()
    forged = "2030-01-01 00:00:00,000 ERROR wallet [deadbeef] ledger check FAILED"
    app.test_client().get("/healthz%0A" + forged.replace(" ", "%20"))
    answer = app.test_client().get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": "forged\n"})
    lines = capfd.readouterr().err.splitlines()
    with app.app_context():
        db.engine.dispose()
    assert not [line for line in lines if line.startswith(forged)], lines
    assert any("/healthz\\n2030-01-01" in line for line in lines), lines
    assert answer.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])


def test_the_dev_servers_coloured_access_lines_read_as_text():
    """Since control characters are escaped, the dev server's coloured access lines read
    ``\\x1b[33m"GET /x HTTP/1.1" 404 -\\x1b[0m`` in ``make run``'s log: werkzeug's own colour codes are dropped
    from its lines. A client's escape character anywhere else is still written escaped."""
    formatter = TextFormatter("%(name)s %(message)s")

    def line(name: str, message: str) -> str:
        return formatter.format(logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None))

    assert line("werkzeug", '127.0.0.1 - - "\x1b[33mGET /x HTTP/1.1\x1b[0m" 404 -') == (
        'werkzeug 127.0.0.1 - - "GET /x HTTP/1.1" 404 -')
    assert line("werkzeug", "GET /\x1b]0;title\x07") == "werkzeug GET /\\x1b]0;title\\x07"
    assert line("wallet.access", "GET /\x1b[33m") == "wallet.access GET /\\x1b[33m"
