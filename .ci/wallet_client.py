"""A tiny HTTP client for CI: registers a real user through the public API, reading the SMS code from the
console sender's JSON-lines file (DESIGN 7.2). Standard library only, so it runs with any python3.

Used by ``.ci/schemathesis.sh`` (``python .ci/wallet_client.py register``) and imported by the schemathesis
hooks (``.ci/schemathesis_hooks.py``) to replace a user whose session was revoked or whose password locked.

Phone numbers come from the NANP range reserved for fiction (+1 NXX 555-0100..0199), never a real number.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Throwaway credentials of throwaway users in a throwaway database.
LOGIN_PASSWORD = "ci correct horse battery"  # noqa: S105
PAYMENT_PASSWORD = "135790"  # noqa: S105
# Area codes whose 555-01XX numbers libphonenumber accepts as valid fictional numbers.
_AREA_CODES = ("202", "212", "213", "305", "310", "312", "404", "415", "503", "512", "602", "617", "646",
               "702", "718", "720", "801", "808", "917", "919")
_CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")


def fictional_phones(offset: int = 0):
    """+1 <area> 555 01XX, cycling through the area codes; ``offset`` lets two callers use disjoint numbers."""
    numbers = [f"+1{area}55501{n:02d}" for n in range(100) for area in _AREA_CODES]
    return iter(numbers[offset:] + numbers[:offset])


class WalletClient:
    def __init__(self, base_url: str, sms_file: str | Path, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.sms_file = Path(sms_file)
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, token: str | None = None,
             headers: dict[str, str] | None = None):
        """``(status, parsed JSON or None)`` for one request."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def wait_ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                status, _ = self.call("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.base_url}/readyz did not answer 200 within {seconds:.0f}s")
            time.sleep(0.2)

    def read_code(self, phone: str, seconds: float = 30.0) -> str:
        """The newest one-time code texted to ``phone`` (waits for the background dispatcher)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.sms_file.exists():
                for line in reversed(self.sms_file.read_text(encoding="utf-8").splitlines()):
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue  # a line still being written
                    if message.get("to") == phone and message.get("event") == "sms_code":
                        match = _CODE.search(message.get("body", ""))
                        if match:
                            return match.group()
            time.sleep(0.1)
        raise RuntimeError(f"no SMS code for {phone} appeared in {self.sms_file} within {seconds:.0f}s")

    def register(self, phone: str, device_id: str = "ci-device") -> dict:
        """Register ``phone`` through the API; returns the 201 body (user, access_token, refresh_token)."""
        status, body = self.call("POST", "/api/v1/sms-codes", {"phone": phone, "purpose": "register", "locale": "en"})
        if status != 202:
            raise RuntimeError(f"POST /api/v1/sms-codes answered {status}: {body}")
        code = self.read_code(phone)
        status, body = self.call("POST", "/api/v1/users", {
            "phone": phone, "sms_code": code, "login_password": LOGIN_PASSWORD,
            "payment_password": PAYMENT_PASSWORD, "device_id": device_id, "locale": "en",
        })
        if status != 201 or not isinstance(body, dict) or "access_token" not in body:
            raise RuntimeError(f"POST /api/v1/users answered {status}: {body}")
        return body

    def verify(self, token: str, real_name: str, id_number: str, card_number: str) -> str:
        """Verify the user's real name and bind a card in that name (DESIGN R7); returns the card's id. The caller
        brings check-digit-valid fake numbers (``tests.factories_ids``)."""
        self._created("/api/v1/me/identity", {"real_name": real_name, "id_number": id_number}, token)
        binding = {"card_number": card_number, "holder_name": real_name, "bank_code": "ICBC",
                   "payment_password": PAYMENT_PASSWORD}
        return self._created("/api/v1/me/bank-cards", binding, token)["id"]

    def _created(self, path: str, request: dict, token: str) -> dict:
        """The body of a POST that must answer 201."""
        status, answer = self.call("POST", path, request, token=token)
        if status != 201 or not isinstance(answer, dict):
            raise RuntimeError(f"POST {path} answered {status}: {answer}")
        return answer

    def register_seller(self, phone: str, real_name: str, id_number: str, card_number: str) -> dict:
        """Register ``phone`` as a verified seller, whom a buyer can open an escrow trade with."""
        body = self.register(phone, device_id="ci-seller")
        self.verify(body["access_token"], real_name, id_number, card_number)
        return body

    def fund(self, token: str, real_name: str, id_number: str, card_number: str, amount: int) -> None:
        """Verify the user and top ``amount`` (fen) up from a new card in their name (the sandbox bank pays it)."""
        card_id = self.verify(token, real_name, id_number, card_number)
        status, answer = self.call("POST", "/api/v1/topups", {"bank_card_id": card_id, "amount": amount,
                                                              "payment_password": PAYMENT_PASSWORD},
                                   token=token, headers={"Idempotency-Key": f"ci-fund-{card_id}"})
        if status != 201 or not isinstance(answer, dict) or answer.get("status") != "succeeded":
            raise RuntimeError(f"POST /api/v1/topups answered {status}: {answer}")


class UserPool:
    """Hands out a live access token, registering a fresh fictional user when the current one is spent;
    ``prepare(token)`` readies each user before its token is handed out (the first one's too). ``phones`` holds the
    numbers of every user it handed out (the first one's when ``first_phone`` names it)."""

    def __init__(self, client: WalletClient, phones, first_token: str | None = None,
                 prepare: Callable[[str], object] | None = None, first_phone: str | None = None) -> None:
        self.client, self.numbers, self.prepare = client, phones, prepare
        self.token, self.phone = first_token, first_phone
        self.phones: set[str] = {first_phone} if first_phone else set()
        self.registered = 0
        self._lock = threading.Lock()
        if first_token is not None and prepare is not None:
            prepare(first_token)

    def current(self) -> str:
        with self._lock:
            if self.token is None:
                phone = next(self.numbers, None)
                if phone is None:
                    raise RuntimeError("ran out of fictional phone numbers")
                token = self.client.register(phone)["access_token"]
                self.phones.add(phone)
                if self.prepare is not None:
                    self.prepare(token)
                self.token, self.phone = token, phone
                self.registered += 1
            return self.token

    def spent(self, token: str) -> None:
        with self._lock:
            if self.token == token:
                self.token = None


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] != "register":
        print("usage: wallet_client.py register BASE_URL PHONE   (SMS_CONSOLE_FILE names the SMS file)",
              file=sys.stderr)
        return 2
    client = WalletClient(argv[2], os.environ["SMS_CONSOLE_FILE"])
    client.wait_ready()
    body = client.register(argv[3])
    status, me = client.call("GET", "/api/v1/me", token=body["access_token"])
    if status != 200 or me.get("phone") != argv[3]:
        print(f"GET /api/v1/me with the new token answered {status}: {me}", file=sys.stderr)
        return 1
    print(body["access_token"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
