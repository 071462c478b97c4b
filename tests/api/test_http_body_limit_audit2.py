"""A request body as a real server hands it over chunked (no Content-Length; the server sets ``wsgi.input_terminated``,
as gunicorn and the dev server do) is held to MAX_CONTENT_LENGTH like one with a Content-Length: over it is 413, not
cut at the limit and read (found by an audit: 64 KiB of a larger chunked body were parsed, a request whose first
64 KiB were valid JSON was carried out, the others were 400 "not valid JSON")."""

import io

from tests.api.test_bad_input import assert_problem
from tests.factories import make_phone


def chunked(client, path, stream, content_type="application/json"):
    """POST ``stream`` as a server passes a chunked body on: no CONTENT_LENGTH, the input terminated by the server."""
    return client.post(path, input_stream=stream, content_type=content_type, headers={"Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})


def test_a_chunked_body_over_the_limit_is_refused_even_when_its_first_bytes_are_a_whole_request(client, inbox):
    phone = make_phone()
    body = b'{"phone": "%s", "purpose": "register"}' % phone.encode() + b" " * 70_000  # over MAX_CONTENT_LENGTH
    response = chunked(client, "/api/v1/sms-codes", io.BytesIO(body))
    assert_problem(response, 413, "payload_too_large")
    assert inbox.messages(to=phone) == []


def test_a_chunked_body_over_the_limit_is_413_not_malformed(client):
    body = b'{"phone": "' + b"1" * 70_000 + b'"}'
    assert_problem(chunked(client, "/api/v1/sessions", io.BytesIO(body)), 413, "payload_too_large")


def test_a_chunked_body_of_exactly_the_limit_is_read(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    start = b'{"phone": "+12025550123", "purpose": "register"}'
    body = start + b" " * (limit - len(start))
    assert len(body) == limit
    assert chunked(client, "/api/v1/sms-codes", io.BytesIO(body)).status_code == 202
