"""Contract tests: the real ``TwilioSmsSender`` against Prism serving Twilio's own OpenAPI description.

Prism (``@stoplight/prism-cli``) validates every request against the description and answers 422 for one
that breaks it, so a request our sender builds wrongly fails here as it would at Twilio.

Where Prism comes from: ``WALLET_PRISM_BIN`` (``.ci/contract.sh`` installs a pinned version and sets it), else
``prism`` on the PATH. Without it these tests skip, unless ``WALLET_REQUIRE_CONTRACT=1`` (CI) makes that a
failure. The description is ``../shared/twilio/twilio_api_v2010.json`` beside the repository, or
``WALLET_TWILIO_SPEC``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from notifications.sms import BaseUrlHttpClient, TwilioSmsSender

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "0123456789abcdef" * 2
FROM_NUMBER = "+12025550100"
CALLBACK_URL = "https://wallet.example.test/api/v1/notifications/twilio/status"


def _missing(what: str) -> None:
    if os.environ.get("WALLET_REQUIRE_CONTRACT") == "1":
        pytest.fail(f"{what} (WALLET_REQUIRE_CONTRACT=1: contract tests must run)")
    pytest.skip(f"{what}; .ci/contract.sh installs a pinned Prism and runs these tests")


def prism_binary() -> str:
    binary = os.environ.get("WALLET_PRISM_BIN") or shutil.which("prism")
    if not binary or not Path(binary).exists():
        _missing("prism is not installed (set WALLET_PRISM_BIN or put prism on the PATH)")
    return str(binary)


def twilio_spec() -> Path:
    spec = Path(os.environ.get("WALLET_TWILIO_SPEC") or ROOT.parent / "shared" / "twilio" / "twilio_api_v2010.json")
    if not spec.is_file():
        _missing(f"Twilio's OpenAPI description is not at {spec}")
    return spec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prism:
    """``prism mock`` on a loopback port, started and stopped at will (the port stays the same)."""

    def __init__(self, binary: str, spec: Path, log_path: Path) -> None:
        self.binary, self.spec, self.log_path = binary, spec, log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "mock", "-h", "127.0.0.1", "-p", str(self.port), "--errors", str(self.spec)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prism exited with {self.process.returncode}:\n{self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prism did not listen within {timeout}s:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def prism_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    """One Prism for the whole run (it takes a few seconds to load Twilio's description)."""
    prism = Prism(prism_binary(), twilio_spec(), tmp_path_factory.mktemp("prism") / "prism.log")
    prism.start()
    yield prism
    prism.stop()


@pytest.fixture
def own_prism(tmp_path: Path) -> Iterator[Prism]:
    """A Prism of the test's own, which the test may stop and start again."""
    prism = Prism(prism_binary(), twilio_spec(), tmp_path / "prism.log")
    prism.start()
    yield prism
    prism.stop()


@dataclass
class Exchange:
    method: str
    url: str
    data: dict[str, Any]
    auth: tuple[str, str] | None
    status: int
    body: str


class RecordingHttpClient(BaseUrlHttpClient):
    """The sender's real HTTP client, also keeping every request that got an answer and the answer."""

    def __init__(self, api_base: str, timeout: float = 5.0) -> None:
        super().__init__(api_base, timeout)
        self.exchanges: list[Exchange] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any):
        response = super().request(method, url, *args, **kwargs)
        last = self._test_only_last_request
        self.exchanges.append(Exchange(method, last.url if last else url, dict(kwargs.get("data") or {}),
                                       kwargs.get("auth"), response.status_code, response.text))
        return response


def make_sender(base_url: str, **overrides: Any) -> TwilioSmsSender:
    settings: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM_NUMBER,
        "status_callback_url": CALLBACK_URL,
        "http_client": RecordingHttpClient(base_url),
    }
    settings.update(overrides)
    return TwilioSmsSender(**settings)
