"""The largest ``SMS_BATCH_SIZE`` the configuration accepts is one a dispatcher can claim with (found by the docs
audit: a larger one was accepted, and every dispatch round failed with a traceback)."""

from __future__ import annotations

from core.config import load
from tests.factories import make_phone


def test_the_largest_batch_size_accepted_sends_the_alerts(app, api, inbox, tmp_path):
    largest = load({"SMS_BATCH_SIZE": str(2**63 - 1)}, str(tmp_path))["SMS_BATCH_SIZE"]
    app.config["SMS_BATCH_SIZE"] = largest
    phone = make_phone()
    assert api.client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": "register"}).status_code == 202
    assert len(inbox.messages(to=phone, event="sms_code")) == 1  # the inbox runs the dispatcher with the setting
