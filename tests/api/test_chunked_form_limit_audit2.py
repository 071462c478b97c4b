"""The chunked-body limit holds for the Twilio callback's form too (found by a review of the chunked 413): a chunked
``application/x-www-form-urlencoded`` body over MAX_CONTENT_LENGTH was cut by werkzeug at the limit without a word
and its first 64 KiB carried out, as JSON bodies were before they were refused 413."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlencode

from notifications.models import SENT
from tests.api.test_bad_input import assert_problem
from tests.api.test_twilio_callbacks import (
    ACCOUNT,
    PATH,
    PUBLIC_URL,
    SID,
    sent_alert,
    sign,
    state,
    twilio_app,  # noqa: F401 - the fixture
)


def test_a_chunked_form_over_the_limit_is_refused(twilio_app, client):  # noqa: F811 - the fixture
    alert_id = sent_alert(twilio_app)
    limit = twilio_app.config["MAX_CONTENT_LENGTH"]
    form = {"MessageSid": SID, "MessageStatus": "delivered", "AccountSid": ACCOUNT}
    body = (urlencode(form) + "&Padding=" + "x" * (limit + 10_000)).encode()
    seen = dict(parse_qsl(body[:limit].decode()))  # what the application reads of it when cut at the limit
    query = urlencode({"alert": alert_id})
    response = client.post(f"{PATH}?{query}", input_stream=io.BytesIO(body),
                           content_type="application/x-www-form-urlencoded",
                           headers={"Transfer-Encoding": "chunked",
                                    "X-Twilio-Signature": sign(f"{PUBLIC_URL}?{query}", seen)},
                           environ_overrides={"wsgi.input_terminated": True})
    assert_problem(response, 413, "payload_too_large")
    assert state(twilio_app, alert_id) == (SENT, None, None)
