"""gunicorn's own error answers as problem+json, like every other error of the API: a request line or headers it
cannot parse (400), a URL or header block over its limits (414, 431), and the 500 it writes when a worker is stopped
mid-request (``GUNICORN_TIMEOUT``, a client that never sends the body it announced). gunicorn writes those itself, as
an HTML page without a request id, before or instead of the application; ``gunicorn.conf.py`` calls ``install()``
(found by an audit). The answer's request id is that of the lines gunicorn logs about the request (its traceback,
"Invalid request from ..."), and the client's own ``X-Request-ID`` when it sent a valid one, as the application's
(found by the logs audit: a made-up id no log line carried)."""

from __future__ import annotations

import functools
import json
import os
import re
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.base import Worker

from core.observability import SERVING, request_id_for

_CODES = {400: "malformed_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
          431: "request_header_fields_too_large", 500: "internal_error", 501: "not_implemented"}


def problem_response(status: int, reason: str, detail: str) -> bytes:
    """The whole HTTP answer gunicorn sends for an error of its own, as problem+json with the request's id (``SERVING``,
    set while gunicorn handles the error), or a fresh one."""
    request_id = SERVING.get()
    if request_id == "-":
        request_id = os.urandom(16).hex()
    if status != 400 and reason == "Bad Request":  # gunicorn keeps a 400's reason for its 500 and 501
        reason = HTTPStatus(status).phrase
    if status == 500:  # gunicorn's message may be a traceback's last line: say what the application says
        # (a 501, an unsupported transfer coding, is the client's to change: gunicorn's message names it)
        detail = "Something went wrong on our side. Quote the request id."
    body = json.dumps({
        "type": "about:blank", "title": reason, "status": status, "detail": detail or reason,
        "code": _CODES.get(status, re.sub(r"\W+", "_", reason.lower())), "request_id": request_id,
    }, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n")
    return head.encode("latin-1") + body


def _write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, problem_response(status_int, reason, mesg))


def _supplied_request_id(req: Any) -> str:
    """The ``X-Request-ID`` of what gunicorn parsed of the request (nothing when it could not parse its head)."""
    for name, value in getattr(req, "headers", None) or ():
        if name.upper() == "X-REQUEST-ID":
            return value
    return ""


def _with_request_id(handle_error: Any) -> Any:
    @functools.wraps(handle_error)
    def handled(worker: Any, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        serving = SERVING.set(request_id_for(_supplied_request_id(req)))
        try:
            handle_error(worker, req, client, addr, exc)
        finally:
            SERVING.reset(serving)

    handled.wallet_request_id = True  # type: ignore[attr-defined]
    return handled


def install() -> None:
    """Have gunicorn's workers write their own error answers as problem+json (``gunicorn.workers.base`` looks up
    ``util.write_error`` at each error), under the request id their log lines about it carry."""
    util.write_error = _write_error
    if not getattr(Worker.handle_error, "wallet_request_id", False):
        Worker.handle_error = _with_request_id(Worker.handle_error)  # type: ignore[method-assign]
