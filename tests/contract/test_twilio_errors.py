"""How TwilioSmsSender reads Twilio's answers: which failures are permanent, which are retried, and where its
requests go. The library parses canned answers in Twilio's documented error formats; no Prism needed."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from notifications.sms import BaseUrlHttpClient, SendFailed, TwilioSmsSender, sender_from_config
from tests.contract.conftest import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, make_sender


class CannedAnswers(HTTPAdapter):
    """A transport under the sender's real HTTP client: answers every request with one canned response (or
    raises one transport error), so the whole client path (URL rewriting, the library's parsing) runs."""

    def __init__(self, status: int = 201, body: Any = None, error: Exception | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.status, self.body, self.error, self.headers = status, body, error, headers or {}
        self.urls: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.urls.append(str(request.url))
        if self.error is not None:
            raise self.error
        response = requests.Response()
        response.status_code = self.status
        response.headers.update(self.headers)
        text = self.body if isinstance(self.body, str) else json.dumps(self.body)
        response._content = text.encode()
        response.encoding = "utf-8"
        response.url, response.request = str(request.url), request
        return response


def canned_client(status: int = 201, body: Any = None, error: Exception | None = None,
                  api_base: str = "", headers: dict[str, str] | None = None) -> BaseUrlHttpClient:
    client = BaseUrlHttpClient(api_base, timeout=5)
    client.answers = CannedAnswers(status, body, error, headers)
    for prefix in ("https://", "http://"):
        client.session.mount(prefix, client.answers)
    return client


def legacy_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


def outcome(client: BaseUrlHttpClient) -> SendFailed:
    sender = make_sender("", http_client=client)
    with pytest.raises(SendFailed) as failure:
        sender.send(to="+12025550123", body="hi", event="e", alert_id="sms_1", created_at="")
    return failure.value


@pytest.mark.parametrize(
    ("code", "what"),
    [(21211, "invalid 'To' number"), (21614, "not a mobile number"), (21610, "unsubscribed"),
     (21612, "not reachable via SMS"), (21217, "not a valid phone number"), (21617, "too long")],
)
def test_an_invalid_unreachable_or_unsubscribed_recipient_is_a_permanent_failure(code, what):
    failure = outcome(canned_client(400, legacy_error(400, code, "The 'To' number +12025550123 is bad.")))
    assert failure.permanent
    assert str(code) in str(failure) and what in str(failure)
    assert "12025550123" not in str(failure), "the number is masked in errors we log and store"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, legacy_error(429, 20429, "Too Many Requests")),
        (500, legacy_error(500, 20500, "Internal Server Error")),
        (503, "<html>Service Unavailable</html>"),
        (502, ""),
        (401, legacy_error(401, 20003, "Authenticate")),
        (400, legacy_error(400, 21408, "Permission to send an SMS has not been enabled for the region")),
        (400, legacy_error(400, 21606, "The From phone number is not a valid, SMS-capable number")),
    ],
)
def test_rate_limits_server_errors_and_configuration_problems_are_retried(status, body):
    failure = outcome(canned_client(status, body))
    assert not failure.permanent
    assert str(status) in str(failure)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"Retry-After": "30"}, 30.0),
     ({"Retry-After": "Thu, 15 Jan 2026 08:02:00 GMT", "Date": "Thu, 15 Jan 2026 08:00:30 GMT"}, 90.0),
     ({"Retry-After": "Thu, 15 Jan 2026 07:59:00 GMT", "Date": "Thu, 15 Jan 2026 08:00:00 GMT"}, 0.0),
     ({"Retry-After": "soon"}, None),
     ({}, None)],
)
def test_a_rate_limited_answer_passes_on_how_long_twilio_asks_us_to_wait(headers, seconds):
    failure = outcome(canned_client(429, legacy_error(429, 20429, "Too Many Requests"), headers=headers))
    assert not failure.permanent
    assert failure.retry_after == seconds


def test_a_wait_asked_by_one_answer_is_not_passed_on_with_the_next():
    client = canned_client(429, legacy_error(429, 20429, "Too Many Requests"), headers={"Retry-After": "30"})
    assert outcome(client).retry_after == 30.0
    client.answers.headers = {}
    assert outcome(client).retry_after is None


def test_an_rfc9457_answer_is_classified_by_its_code_too():
    problem = {"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To' Phone Number",
               "status": 400, "code": 21211, "detail": "The 'To' number +12025550123 is not valid."}
    failure = outcome(canned_client(400, problem))
    assert failure.permanent
    assert "12025550123" not in str(failure)


@pytest.mark.parametrize(
    ("error", "in_doubt"),
    [(requests.ConnectTimeout("connect"), False), (requests.ReadTimeout("read"), True),
     (requests.ConnectionError("Connection aborted: RemoteDisconnected"), True)],
)
def test_transport_errors_are_retried_and_say_whether_twilio_may_have_the_message(error, in_doubt):
    failure = outcome(canned_client(error=error))
    assert not failure.permanent
    assert failure.in_doubt is in_doubt
    assert type(error).__name__ in str(failure)


def test_a_refused_connection_never_reached_twilio():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    sender = make_sender("", http_client=None, api_base=f"http://127.0.0.1:{closed_port}", timeout=2)
    with pytest.raises(SendFailed) as failure:
        sender.send(to="+12025550123", body="hi", event="e", alert_id="sms_1", created_at="")
    assert not failure.value.permanent and not failure.value.in_doubt


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: Twilio hanging."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_provider_that_never_answers_times_out_as_a_transient_failure(silent_server):
    sender = make_sender(f"http://127.0.0.1:{silent_server}", http_client=None, timeout=0.3,
                         api_base=f"http://127.0.0.1:{silent_server}")
    with pytest.raises(SendFailed) as failure:
        sender.send(to="+12025550123", body="hi", event="e", alert_id="sms_1", created_at="")
    assert not failure.value.permanent
    assert failure.value.in_doubt, "Twilio may have taken a request it never answered"
    assert "ReadTimeout" in str(failure.value)


@pytest.mark.parametrize(
    ("api_base", "expected"),
    [("", "https://api.twilio.com/2010-04-01/Accounts/"),
     ("http://127.0.0.1:4010", "http://127.0.0.1:4010/2010-04-01/Accounts/"),
     ("http://127.0.0.1:4010/", "http://127.0.0.1:4010/2010-04-01/Accounts/")],
)
def test_the_api_base_replaces_twilios_host_and_nothing_else(api_base, expected):
    client = canned_client(201, {"sid": "SM" + "a" * 32, "status": "queued"}, api_base=api_base)
    sender = make_sender("", http_client=client)
    assert sender.send(to="+12025550123", body="hi", event="e", alert_id="sms_1", created_at="") == "SM" + "a" * 32
    assert client.answers.urls == [f"{expected}{ACCOUNT_SID}/Messages.json"]


@pytest.mark.parametrize(
    ("missing", "message"),
    [({"account_sid": ""}, "Account SID"), ({"auth_token": ""}, "auth token"),
     ({"from_number": ""}, "From number"), ({"api_key_sid": "SK" + "1" * 32}, "both")],
)
def test_an_incomplete_configuration_is_refused(missing, message):
    settings = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, **missing}
    with pytest.raises(ValueError, match=message):
        TwilioSmsSender(**settings)


def test_the_console_is_used_without_credentials_and_a_half_configuration_stops_the_app(tmp_path):
    base = {"TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": "", "TWILIO_API_KEY_SID": "", "TWILIO_API_KEY_SECRET": "",
            "TWILIO_FROM_NUMBER": "", "TWILIO_MESSAGING_SERVICE_SID": "", "TWILIO_STATUS_CALLBACK_URL": "",
            "TWILIO_API_BASE": "", "SMS_SEND_TIMEOUT_SECONDS": 10.0, "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"),
            "WALLET_ENV": "test"}
    assert type(sender_from_config(base)).__name__ == "ConsoleSmsSender"
    with pytest.raises(RuntimeError, match="incomplete Twilio configuration"):
        sender_from_config({**base, "TWILIO_ACCOUNT_SID": ACCOUNT_SID})
    complete = {**base, "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_MESSAGING_SERVICE_SID": "MG" + "2" * 32}
    assert isinstance(sender_from_config(complete), TwilioSmsSender)
