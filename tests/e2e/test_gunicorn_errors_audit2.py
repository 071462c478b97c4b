"""gunicorn's own error answers are problem+json with a stable code and a request id, like the API's (README:
"Errors are application/problem+json with a stable code"): a request line or header block gunicorn cannot parse or
that is over its limits, and the 500 it writes for a request its worker was stopped in (GUNICORN_TIMEOUT; here a
client that never sends the body it announced). They were gunicorn's HTML pages without a request id (found by an
audit)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.server import ROOT, free_port

pytestmark = pytest.mark.e2e


@contextmanager
def running_gunicorn(workdir: Path, **env: str) -> Iterator[tuple[int, Path]]:
    """gunicorn as the README starts it (one worker, SQLite in ``workdir``, ``env`` on top), up and answering
    /healthz; its port and the file its output goes to. Stopped with SIGTERM after."""
    port = free_port()
    log = workdir / "gunicorn.log"
    env = {**os.environ, "WALLET_ENV": "development", "DATABASE_URL": f"sqlite:///{workdir / 'wallet.db'}",
           "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
           "SMS_CONSOLE_FILE": str(workdir / "sms.jsonl"), "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
           "GUNICORN_CONTROL_SOCKET": str(workdir / "gunicorn.ctl"), **env}
    with log.open("wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if b" 200 " in send(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").split(b"\r\n")[0]:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(log.read_text())
        yield port, log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    with running_gunicorn(tmp_path_factory.mktemp("gunicorn-errors"), GUNICORN_TIMEOUT="3") as (port, _log):
        yield port


def send(port: int, raw: bytes, timeout: float = 15) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def problem(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert headers.get("content-type") == "application/problem+json", answer[:300]
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.mark.parametrize(("raw", "status", "code"), [
    (b"GARBAGE\r\n\r\n", 400, "malformed_request"),
    (b"GET /api/v1/trades/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
    (b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "malformed_request"),
], ids=["request-line", "long-url", "big-header", "bad-content-length"])
def test_what_gunicorn_cannot_parse_is_a_problem(gunicorn, raw, status, code):
    got, headers, body = problem(send(gunicorn, raw))
    assert (got, body["status"], body["code"]) == (status, status, code)
    assert headers["x-request-id"] == body["request_id"]


def test_a_request_whose_worker_was_stopped_is_a_problem_without_details(gunicorn):
    """A body announced but never sent holds the worker until GUNICORN_TIMEOUT; gunicorn then stops it and answers
    500 itself."""
    announced = (b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{}")
    got, headers, body = problem(send(gunicorn, announced, timeout=30))
    assert (got, body["code"]) == (500, "internal_error")
    assert "Traceback" not in json.dumps(body) and headers["x-request-id"] == body["request_id"]
