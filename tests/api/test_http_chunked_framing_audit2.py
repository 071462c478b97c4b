"""A chunked request body whose framing is broken (a chunk size that is no hex number, a chunk not ended by CRLF) is
the client's mistake: 400 malformed_request as problem+json, not a 500 with gunicorn's traceback in the log (found by
an audit: ``InvalidChunkSize`` and ``ChunkMissingTerminator`` are no ``OSError``, so werkzeug let them through)."""

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize

from tests.api.test_bad_input import assert_problem
from tests.api.test_http_body_limit_audit2 import chunked


class BrokenChunks:
    """gunicorn's chunked body (``gunicorn.http.body.Body``: ``read``, no ``readinto``) meeting a chunk size or
    terminator that is not HTTP."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def tell(self) -> int:
        return 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize("error", [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"XX")], ids=repr)
@pytest.mark.parametrize(("path", "content_type"), [
    ("/api/v1/sms-codes", "application/json"),
    ("/api/v1/sessions", "application/json"),
    ("/api/v1/notifications/twilio/status", "application/x-www-form-urlencoded"),  # Twilio's callbacks are forms
])
def test_broken_chunked_framing_is_a_malformed_request(client, caplog, path, content_type, error):
    response = chunked(client, path, BrokenChunks(error), content_type)
    assert_problem(response, 400, "malformed_request")
    assert response.headers["X-Request-ID"]
    assert "unhandled error" not in caplog.text and "Traceback" not in caplog.text
