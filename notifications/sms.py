"""SMS senders behind one interface. The dispatcher calls ``send``; it never knows which provider it has.

``send`` returns the provider's message id, or raises ``SendFailed`` saying whether trying again could
help (``permanent=False``) or not (an invalid, unreachable or unsubscribed number; a body Twilio refuses).

This is the only module that imports ``twilio``: the REST client for sending, and the webhook
``RequestValidator`` behind ``signature_valid`` for the delivery callbacks.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client
from urllib3.exceptions import NewConnectionError

from core import clock

log = logging.getLogger(__name__)


class SendFailed(Exception):
    """The provider did not accept the message. ``permanent`` means retrying cannot succeed; ``in_doubt``
    means the request may have reached the provider and been accepted (its answer was lost), so a retry
    may duplicate it; ``retry_after`` is how many seconds the provider asked us to wait before the next try
    (a 429's ``Retry-After``), when it said."""

    def __init__(self, message: str, *, permanent: bool, in_doubt: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.in_doubt = in_doubt
        self.retry_after = retry_after  # seconds the provider asked us to wait (``Retry-After``), if it said


class SmsSender(Protocol):
    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str: ...


class ConsoleSmsSender:
    """Development sender: logs each message and appends it as one JSON line to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        line = json.dumps({"to": to, "body": body, "event": event, "created_at": created_at}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        log.info("sms to=%s event=%s id=%s", _masked(to), event, alert_id)  # the file has the number; logs need not
        return f"console-{alert_id}"


# --- Twilio ---------------------------------------------------------------------------------------------

# Twilio error codes that say this message to this number can never go through; everything else
# (429, 5xx, authentication or account configuration, unknown codes) is retried until the alert is too old,
# so an operator who fixes a credential or a geographic permission loses no alert.
PERMANENT_CODES: dict[int, str] = {
    21211: "invalid 'To' number",
    21214: "'To' number cannot be reached",
    21217: "not a valid phone number",
    21407: "this number type cannot receive SMS",
    21610: "the recipient unsubscribed (STOP)",
    21612: "'To' number not reachable via SMS",
    21614: "'To' number is not a mobile number",
    21602: "message body is required",
    21617: "message body is too long",
}

# Hosts of Twilio's REST API (api.twilio.com, or api.<edge>.<region>.twilio.com when an edge is set).
_TWILIO_API = re.compile(r"^https://api(?:\.[a-z0-9-]+)*\.twilio\.com(?=/|$)")
_LONG_NUMBER = re.compile(r"\+?\d{7,}")


def _masked(text: str) -> str:
    """Error texts quote the number; keep only its last four digits in logs and in ``last_error``."""
    return _LONG_NUMBER.sub(lambda match: "****" + match.group()[-4:], text)


class BaseUrlHttpClient(TwilioHttpClient):
    """The library's own HTTP client, with ``https://api.twilio.com`` swapped for ``api_base`` when one is
    given (the contract tests point it at a mock served from Twilio's OpenAPI description).

    Requests are never retried at this layer: a retried POST could send the message twice. Retrying is
    the dispatcher's job, which knows what it already handed over. The library's errors do not carry the
    answer's headers, so the client keeps the ``Retry-After`` of the last answer it had in this thread
    (``retry_after``) for the sender to pass on.
    """

    def __init__(self, api_base: str = "", timeout: float | None = None) -> None:
        http_log = logging.getLogger(f"{__name__}.http")
        http_log.setLevel(logging.WARNING)  # the library logs every request's headers at INFO
        super().__init__(timeout=timeout, logger=http_log)
        self.api_base = api_base.rstrip("/")
        self._last = threading.local()  # per thread: dispatcher threads may share one sender

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        if self.api_base:
            url = _TWILIO_API.sub(lambda _match: self.api_base, url, count=1)
        self._last.retry_after = None
        response = super().request(method, url, *args, **kwargs)
        headers = response.headers or {}
        self._last.retry_after = retry_after_seconds(headers.get("Retry-After"), headers.get("Date"))
        return response

    def retry_after(self) -> float | None:
        """Seconds the last answer in this thread asked us to wait (its ``Retry-After``), or None."""
        return getattr(self._last, "retry_after", None)


def retry_after_seconds(value: str | None, date: str | None = None) -> float | None:
    """A ``Retry-After`` header (RFC 9110: delay-seconds, or an HTTP-date, taken relative to the answer's ``Date``
    when it has one, so that our clock's skew does not count) in seconds, never below 0; None when absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
        since = parsedate_to_datetime(date) if date else clock.now()
        return max((at - since).total_seconds(), 0.0)
    except (TypeError, ValueError, IndexError):  # not a date, or a naive one next to an aware one
        return None


def classify(status: int | None, code: int | None, message: str, retry_after: float | None = None) -> SendFailed:
    """Turn a Twilio error answer into ``SendFailed``, permanent only for the codes that mean "never"; a transient
    one keeps the answer's ``retry_after``."""
    if code in PERMANENT_CODES:
        return SendFailed(f"twilio {status} error {code} ({PERMANENT_CODES[code]}): {message}", permanent=True)
    return SendFailed(f"twilio {status} error {code}: {message}", permanent=False, retry_after=retry_after)


class TwilioSmsSender:
    """Sends through Twilio's Messages API with the official client.

    Authentication: the Account SID with its auth token, or an API key SID and secret (the Account SID
    still names the account). Sender: a ``From`` number, a Messaging Service SID, or both. When
    ``status_callback_url`` is given, each message asks Twilio to report its delivery there, with
    ``?alert=<alert id>`` appended so a report can be matched even before the message SID was recorded.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str = "",
        api_key_sid: str = "",
        api_key_secret: str = "",
        from_number: str = "",
        messaging_service_sid: str = "",
        status_callback_url: str = "",
        api_base: str = "",
        timeout: float = 10.0,
        http_client: TwilioHttpClient | None = None,
    ) -> None:
        if not account_sid:
            raise ValueError("Twilio needs an Account SID")
        if bool(api_key_sid) != bool(api_key_secret):
            raise ValueError("Twilio API keys need both the key SID and its secret")
        if not (auth_token or api_key_sid):
            raise ValueError("Twilio needs the auth token or an API key and secret")
        if not (from_number or messaging_service_sid):
            raise ValueError("Twilio needs a From number or a Messaging Service SID")
        username, password = (api_key_sid, api_key_secret) if api_key_sid else (account_sid, auth_token)
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback_url = status_callback_url
        self.http_client = http_client or BaseUrlHttpClient(api_base, timeout)
        self.client = Client(username, password, account_sid=account_sid, http_client=self.http_client)

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        """Hand one message to Twilio; its message SID on success. Raises ``SendFailed``."""
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if self.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        if self.from_number:
            kwargs["from_"] = self.from_number
        if self.status_callback_url:
            kwargs["status_callback"] = callback_url_for(self.status_callback_url, alert_id)
        try:
            message = self.client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise classify(exc.status, exc.code, _masked(str(exc.msg)), self._retry_after()) from exc
        except TwilioServiceException as exc:
            raise classify(exc.status, exc.code, _masked(f"{exc.title}: {exc.detail or ''}"),
                           self._retry_after()) from exc
        except requests.RequestException as exc:
            # Refused connections and connect timeouts never reached Twilio. A read timeout or a connection
            # dropped mid-answer may hide an accepted message: retried all the same, but marked in doubt.
            raise SendFailed(f"twilio unreachable: {type(exc).__name__}", permanent=False,
                             in_doubt=not _never_sent(exc)) from exc
        except TwilioException as exc:
            raise SendFailed(f"twilio client error: {_masked(str(exc))}", permanent=False) from exc
        except ValueError as exc:
            # A 2xx answer the client cannot read (a proxy's error page, a truncated body): Twilio may well have
            # taken the message, so retried as in doubt.
            raise SendFailed(f"twilio answered something unreadable: {type(exc).__name__}", permanent=False,
                             in_doubt=True) from exc
        if not message.sid:
            raise SendFailed("twilio answered without a message SID", permanent=False)
        log.info("sms handed to twilio sid=%s event=%s alert=%s", message.sid, event, alert_id)
        return str(message.sid)


    def _retry_after(self) -> float | None:
        """The ``Retry-After`` of the answer just refused, when our HTTP client kept it (another client cannot)."""
        return self.http_client.retry_after() if isinstance(self.http_client, BaseUrlHttpClient) else None


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the provider (no connection was ever made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def callback_url_for(base: str, alert_id: str) -> str:
    """``base`` with ``alert=<alert_id>`` added to its query (Twilio signs the URL exactly as given)."""
    parts = urlsplit(base)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("alert", alert_id)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def signature_valid(
    auth_token: str, url: str, params: Mapping[str, Any], signature: str, signature_settings: str | None = None
) -> bool:
    """True when ``signature`` (``X-Twilio-Signature``) is Twilio's signature of ``url`` and the form
    ``params`` with ``auth_token``. The algorithm comes from ``X-Twilio-Webhooks-Signature-Settings``
    (HMAC-SHA1 when absent); an unknown one fails."""
    if not auth_token or not signature:
        return False
    algorithm = get_signature_algorithm(signature_settings)
    return bool(RequestValidator(auth_token).validate(url, params, signature, algorithm))


def twilio_configured(config: Mapping[str, Any]) -> bool:
    return bool(config.get("TWILIO_ACCOUNT_SID"))


def sender_from_config(config: Mapping[str, Any]) -> SmsSender:
    """``TwilioSmsSender`` when ``TWILIO_ACCOUNT_SID`` is set, else ``ConsoleSmsSender``.

    Raises ``RuntimeError`` for a half-done Twilio configuration rather than quietly logging alerts
    to a file in production, or asking Twilio for delivery reports that ``signature_valid`` would refuse,
    every one, for want of the auth token they are signed with (sending with an API key needs no token).
    """
    if not twilio_configured(config):
        if config.get("WALLET_ENV") == "production":
            log.warning("no Twilio credentials: SMS alerts go to %s, not to phones", config["SMS_CONSOLE_FILE"])
        return ConsoleSmsSender(config["SMS_CONSOLE_FILE"])
    if config["TWILIO_STATUS_CALLBACK_URL"] and not config["TWILIO_AUTH_TOKEN"]:
        raise RuntimeError("incomplete Twilio configuration: TWILIO_STATUS_CALLBACK_URL needs TWILIO_AUTH_TOKEN, "
                           "which signs the delivery reports (without it every report would be refused)")
    try:
        return TwilioSmsSender(
            account_sid=config["TWILIO_ACCOUNT_SID"],
            auth_token=config["TWILIO_AUTH_TOKEN"],
            api_key_sid=config["TWILIO_API_KEY_SID"],
            api_key_secret=config["TWILIO_API_KEY_SECRET"],
            from_number=config["TWILIO_FROM_NUMBER"],
            messaging_service_sid=config["TWILIO_MESSAGING_SERVICE_SID"],
            status_callback_url=config["TWILIO_STATUS_CALLBACK_URL"],
            api_base=config["TWILIO_API_BASE"],
            timeout=config["SMS_SEND_TIMEOUT_SECONDS"],
        )
    except ValueError as exc:
        raise RuntimeError(f"incomplete Twilio configuration (TWILIO_* settings): {exc}") from exc
