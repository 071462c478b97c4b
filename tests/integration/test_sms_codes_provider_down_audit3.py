"""A one-time code asked for while the SMS provider is down, as the user waiting for it lives it (sms audit)."""

from __future__ import annotations

import re
import uuid

import pytest

from notifications import dispatcher
from notifications.sms import SendFailed
from security import codes
from security.errors import InvalidSmsCode
from tests.factories import make_phone


class FlakyProvider:
    """Refuses every message (a 503) until ``back`` is True; records the bodies it took, in order."""

    def __init__(self) -> None:
        self.back = False
        self.bodies: list[str] = []

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        if not self.back:
            raise SendFailed("twilio 503 error None: unavailable", permanent=False)
        self.bodies.append(body)
        return f"SM{uuid.uuid4().hex}"


def test_after_an_outage_the_last_code_the_phone_gets_is_the_one_that_works(app, clock):
    provider, phone = FlakyProvider(), make_phone()
    with app.app_context():
        codes.request_code(phone, "register", "en")  # the first code: every try fails while the provider is down
        for _ in range(125):  # 62.5 s of a dispatcher polling twice a second: six tries, the last at 62 s at most
            dispatcher.dispatch_all(provider)
            clock.advance(seconds=0.5)
        provider.back = True
        codes.request_code(phone, "register", "en")  # nothing came: the user asks again, once the resend is allowed
        for _ in range(600):  # five minutes more
            dispatcher.dispatch_all(provider)
            clock.advance(seconds=0.5)
        received = [re.search(r"\b\d{6}\b", body).group() for body in provider.bodies]
        assert received, "no code reached the phone"
        try:
            codes.consume_code(phone, "register", received[-1])
        except InvalidSmsCode:
            pytest.fail(f"the phone got the codes {received} in this order; the last one is refused")
