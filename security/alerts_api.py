"""GET /api/v1/me/alerts: the caller's own SMS alerts with their delivery status, newest first.

It lives in ``security`` because it needs the authenticated user; the rows belong to ``notifications``.
One-time-code bodies are never shown, not even before the dispatcher blanks them: whoever holds a stolen
access token must not be able to read the code that guards a password reset or a new device.
An alert is listed from the moment a dispatcher has taken it out of its change's event row (``notifications.outbox``,
``dispatcher.expand``): within a dispatcher round of the change, while one runs.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response
from pydantic import BaseModel, Field

from core.api import endpoint, parse_query, respond
from core.pagination import AlertPageQuery, Page
from notifications.models import REDACTED, STATUSES, AlertView, alerts_of
from notifications.templates import mask_phone
from security.auth import CALLER, require_token

bp = Blueprint("alerts", __name__, url_prefix="/api/v1")


class AlertOut(BaseModel):
    id: str
    event: str
    to: str
    body: str
    status: str = Field(description="pending and sending: not yet with the provider; sent: handed over; then"
                        " delivered or undelivered as the provider reports; failed: the provider failed it, or given"
                        " up", json_schema_extra={"enum": list(STATUSES)})
    created_at: datetime
    sent_at: datetime | None


class AlertPage(Page[AlertOut]):
    pass


def _out(alert: AlertView) -> AlertOut:
    return AlertOut(
        id=alert.id,
        event=alert.event,
        to=mask_phone(alert.to_phone),
        body=REDACTED if alert.sensitive else alert.body,
        status=alert.status,
        created_at=alert.created_at,
        sent_at=alert.sent_at,
    )


@endpoint(bp, "/me/alerts", "GET", summary="My SMS alerts and their delivery status, newest first",
          query=AlertPageQuery, response=AlertPage)
def list_my_alerts() -> Response:
    require_token()  # a request without a token is refused as such before its query is judged
    query = parse_query(AlertPageQuery)
    alerts, has_more = alerts_of(CALLER, query)  # the token's check rides in the page's statement
    return respond(AlertPage(
        data=[_out(alert) for alert in alerts],
        has_more=has_more,
        next_starting_after=alerts[-1].id if has_more else None,
    ))
