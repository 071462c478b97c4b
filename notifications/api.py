"""HTTP endpoint of the notifications package: Twilio's delivery status callbacks.

Twilio posts ``application/x-www-form-urlencoded`` and signs the full URL it called plus the form fields
with the account's auth token (``X-Twilio-Signature``). Behind a proxy the URL this app sees is not the one
Twilio called, so the signed URL is rebuilt from ``TWILIO_STATUS_CALLBACK_URL`` (the public address we gave
Twilio) with the query string of the request; without that setting, from the request itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, Response, current_app, request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from core.api import endpoint, form_body, parse_query, respond, validated
from core.errors import Forbidden
from notifications.callbacks import StatusReport, record_delivery_status
from notifications.sms import signature_valid

bp = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications")


class InvalidSignature(Forbidden):
    """A provider callback arrived without a valid signature (forged, altered, or for another account)."""

    code, title = "invalid_signature", "Invalid signature"


class ForeignAccount(Forbidden):
    """A provider callback, validly signed, names another Twilio account than ours (``AccountSid``), or none."""

    code, title = "foreign_account", "Callback for another account"


class TwilioStatusForm(BaseModel):
    """The fields we use of Twilio's status callback (form-encoded); Twilio sends more, which are ignored. The
    OpenAPI document describes the body with it."""

    model_config = ConfigDict(extra="ignore")
    MessageSid: str = Field(pattern=r"^[A-Z]{2}[0-9a-fA-F]{32}$", description="The message the report is about")
    MessageStatus: str = Field(min_length=1, max_length=32, description="queued, sent, delivered, undelivered, ...")
    # A form field is there or not: absent is None, never a documented null.
    ErrorCode: int | SkipJsonSchema[None] = Field(default=None, ge=0, le=2**31 - 1,  # ``alerts.provider_error_code``
                                                  description="Twilio's error code, on a failed delivery")
    AccountSid: str | SkipJsonSchema[None] = Field(default=None, description="The Twilio account that sent the"
                                                   " message; required, and ours, when TWILIO_ACCOUNT_SID is set")


class TwilioStatusQuery(BaseModel):
    """The query string of the callback URL the sender gave Twilio: the id of the alert the message carries."""

    model_config = ConfigDict(extra="ignore")
    alert: str | None = None


def signed_url() -> str:
    """The URL Twilio called, as it signed it."""
    configured = current_app.config["TWILIO_STATUS_CALLBACK_URL"]
    if configured:
        parts = urlsplit(configured)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    else:
        base = request.base_url
    query = request.query_string.decode("utf-8", "replace")
    return f"{base}?{query}" if query else base


@endpoint(bp, "/twilio/status", "POST", status=204, auth=False, form=TwilioStatusForm,
          summary="Twilio delivery status callback (form-encoded; needs a valid X-Twilio-Signature and our AccountSid)",
          errors=(InvalidSignature, ForeignAccount))
def twilio_status() -> Response:
    form = form_body()
    if not signature_valid(
        current_app.config["TWILIO_AUTH_TOKEN"],
        signed_url(),
        form,
        request.headers.get("X-Twilio-Signature", ""),
        request.headers.get("X-Twilio-Webhooks-Signature-Settings"),
    ):
        raise InvalidSignature("The X-Twilio-Signature header is missing or does not match this request.")
    # The signature proves only that the auth token signed it: a report about another account's message (one
    # signed with a token reused elsewhere, say) is not ours to record.
    ours = current_app.config["TWILIO_ACCOUNT_SID"]
    if ours and form.get("AccountSid") != ours:
        raise ForeignAccount("The report's AccountSid is missing or is not this application's Twilio account.")
    fields = validated(TwilioStatusForm, form.to_dict())
    # The query string is ours (``sms.callback_url_for``), but what arrives is checked like any other: a NUL in it
    # was a 500 on PostgreSQL (found by an audit).
    query = parse_query(TwilioStatusQuery)
    record_delivery_status(StatusReport(fields.MessageSid, fields.MessageStatus.lower(), fields.ErrorCode,
                                        query.alert))
    return respond(None, 204)
