"""Every client error an API test meets is one the OpenAPI document lists for the operation that answered it.

``watch(app)`` registers an ``after_request`` hook on a test's app: a problem+json answer with a 4xx status must carry
a ``(status, code)`` that ``core.api.REGISTRY`` documents for the operation (found by ``request.url_rule`` and the
method). One that is not fails the request (the hook raises, and the app answers 500) and is kept in
``app.extensions["undocumented_errors"]``, which the app fixtures check when the test ends, so that a test that
expected some error still fails. Answers of no documented operation (an unknown path, 405, ``/metrics``, the
document itself) are not checked.
"""

from __future__ import annotations

import re

from flask import Flask, Response, request

from core.api import REGISTRY, Endpoint

_RULE_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
KEPT = "undocumented_errors"


def operation(rule: str, method: str) -> Endpoint | None:
    """The registered operation a Flask ``rule`` serves for ``method`` (HEAD is GET's)."""
    path = _RULE_PARAM.sub(r"{\1}", rule)
    method = "get" if method.upper() == "HEAD" else method.lower()
    return next((ep for ep in REGISTRY if ep.path == path and ep.method == method), None)


def watch(app: Flask) -> Flask:
    """Check every 4xx problem+json answer of ``app`` against the document (see the module's docstring)."""
    found: list[str] = app.extensions.setdefault(KEPT, [])

    @app.after_request
    def documented_error(response: Response) -> Response:
        if not 400 <= response.status_code < 500 or response.mimetype != "application/problem+json":
            return response
        served = None if request.url_rule is None else operation(request.url_rule.rule, request.method)
        if served is None:
            return response
        code = (response.get_json(silent=True) or {}).get("code")
        if (response.status_code, code) not in served.errors:
            message = (f"{served.method.upper()} {served.path} answered {response.status_code} {code!r}, which the"
                       f" OpenAPI document does not list for that operation (core.api.endpoint(errors=...))")
            found.append(message)
            raise AssertionError(message)
        return response

    return app


def assert_none_found(app: Flask) -> None:
    """Fail with every undocumented error ``app`` answered (the hook's own failure may have been read as a 500)."""
    found = app.extensions.get(KEPT, [])
    assert not found, "undocumented error answers:\n" + "\n".join(found)
