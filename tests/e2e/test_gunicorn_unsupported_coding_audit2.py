"""A request with a transfer coding gunicorn does not implement (``Transfer-Encoding: br, chunked``) is the client's
to change: its problem says what gunicorn refused, under the status's own title, not "Something went wrong on our
side" under "Bad Request" (found by the review of core.gunicorn_errors: every status from 500 up lost gunicorn's
message, and gunicorn passes 501 with the reason of a 400)."""

import pytest

from tests.e2e.test_gunicorn_errors_audit2 import gunicorn, problem, send  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e


def test_an_unsupported_transfer_coding_is_a_501_that_names_it(gunicorn):  # noqa: F811 - the fixture
    raw = (b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Transfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n")
    answer = send(gunicorn, raw)
    got, _headers, body = problem(answer)
    assert (got, body["code"], body["title"]) == (501, "not_implemented", "Not Implemented"), body
    assert answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), answer[:100]
    assert "br" in body["detail"] and "our side" not in body["detail"], body
