"""The request id of an answer gunicorn writes itself is in the log line that says what happened (found by the logs
audit). Its 500 (a request whose worker was stopped: GUNICORN_TIMEOUT, here a body announced and never sent) says
"Quote the request id", but the id was made up as the answer was written: gunicorn's log line for the same request,
with the traceback, carried ``request_id`` ``-``, so the id a user quoted led nowhere; and the ``X-Request-ID`` the
client had sent was replaced by another."""

import json
import time
from pathlib import Path

import pytest

from tests.e2e.test_gunicorn_errors_audit2 import problem, running_gunicorn, send

pytestmark = pytest.mark.e2e

STALLED = (b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 100\r\n%s\r\n{}")


@pytest.fixture(scope="module")
def gunicorn_json(tmp_path_factory):
    with running_gunicorn(tmp_path_factory.mktemp("gunicorn-request-ids"), LOG_FORMAT="json",
                          GUNICORN_TIMEOUT="2") as served:
        yield served


def logged(log: Path, request_id: str) -> list[dict]:
    lines = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("request_id") == request_id:
            lines.append(record)
    return lines


@pytest.mark.parametrize("header", [b"", b"X-Request-ID: stalled-client-7\r\n"], ids=["ours", "the-clients"])
def test_the_request_id_of_gunicorns_500_leads_to_its_log_line(gunicorn_json, header):
    port, log = gunicorn_json
    got, headers, body = problem(send(port, STALLED % header, timeout=30))
    assert (got, body["code"]) == (500, "internal_error")
    request_id = body["request_id"]
    assert headers["x-request-id"] == request_id
    if header:
        assert request_id == "stalled-client-7"  # the client's own, as the application answers
    time.sleep(0.5)  # the log line is written before the answer, but through a pipe
    lines = logged(log, request_id)
    assert any("Error handling request" in line["msg"] and line["level"] == "ERROR" for line in lines), \
        log.read_text(encoding="utf-8")[-3000:]


def test_a_request_gunicorn_cannot_parse_is_logged_with_the_id_it_answered(gunicorn_json):
    port, log = gunicorn_json
    got, _headers, body = problem(send(port, b"GARBAGE\r\n\r\n"))
    assert got == 400
    time.sleep(0.5)
    assert any("Invalid request" in line["msg"] for line in logged(log, body["request_id"])), \
        log.read_text(encoding="utf-8")[-3000:]
