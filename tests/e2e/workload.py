"""A mobile-client workload against several instances of the service, recording every request and answer.

``Workload(urls, sms_file).run(seconds, threads)`` starts ``threads`` actors. Each owns a few accounts (so its
knowledge of their balances is exact: money leaves an account only through its owner) and loops over a
weighted mix of stories until the time is up: registration (SMS code read from the shared console file),
identity verification and card binding, logins (now and then from a new device, with an SMS code), top-ups,
payments to phone numbers, withdrawals, escrow trades (open, pay, ship, confirm; some left half-way on
purpose), refunds before shipping agreed by the seller, partial refunds after shipping then confirmation,
and reads. Every request goes to a randomly chosen instance.

Like a real mobile client after a dropped connection:

* a money POST (it carries an ``Idempotency-Key``) is sent again with the **same key** until it gets an
  answer, to any instance;
* a GET, or any request that surely never reached a server (connection refused), is simply sent again;
* any other POST whose outcome is unknown is resolved by reading the state back (the trade, its refunds,
  the card list, a login) before deciding whether to send it again.

``Books`` keeps what the answers promised (2xx only): ids of transfers, top-ups, withdrawals, trade steps,
and the balance every account must end with. The suites compare that with the database.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from core.idempotency import fingerprint
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone
from tests.factories_ids import make_card_number, make_id_number
from wallet.funds import request_key

API = "/api/v1"
NAMES = ("张三", "李四", "王五", "赵六", "陈七", "刘八")
BANKS = ("ICBC", "ABC", "CCB", "CMB")
PAYMENTS_PER_PAYEE_DAILY = 20  # the default of LIMIT_PAYMENTS_PER_PAYEE_DAILY, which the suites leave as it is
_CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")
_lock = threading.Lock()  # the factories' counters are shared by every actor


def _phone() -> str:
    with _lock:
        return make_phone()


def _card() -> str:
    """A fresh card the sandbox bank treats as ordinary (0000, 8888 and 9999 endings are its failure cases)."""
    with _lock:
        while (card := make_card_number()).endswith(("0000", "8888", "9999")):
            pass
        return card


def _id_number() -> str:
    with _lock:
        return make_id_number()


# --- recording ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    at: float
    kind: str
    method: str
    path: str
    instance: int
    status: int | None  # None: no answer (the error says why)
    error: str | None
    elapsed: float
    attempt: int
    replayed: bool = False  # the answer came from the idempotency store (Idempotent-Replayed: true)
    key: str | None = None  # the Idempotency-Key sent
    code: str | None = None  # the problem's machine code of an error answer
    request_id: str | None = None  # the server's X-Request-ID (to find the request in the process logs)


class Recorder:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def dump(self, path: Path) -> None:
        """Every request and its answer, one JSON object per line (kept with the process logs)."""
        with self._lock, path.open("w", encoding="utf-8") as handle:
            for record in self.records:
                handle.write(json.dumps(record.__dict__, ensure_ascii=False) + "\n")

    def by_kind_and_status(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter((r.kind, str(r.status) if r.status is not None else r.error or "?") for r in self.records)

    def latency_ms(self) -> dict[str, dict[str, int]]:
        """p50 and p95 latency per kind of request, of the answered ones."""
        with self._lock:
            by_kind: dict[str, list[float]] = {}
            for r in self.records:
                if r.status is not None:
                    by_kind.setdefault(r.kind, []).append(r.elapsed)
        out = {}
        for kind, values in sorted(by_kind.items()):
            values.sort()
            out[kind] = {"p50": round(1000 * values[len(values) // 2]),
                         "p95": round(1000 * values[min(len(values) - 1, int(len(values) * 0.95))])}
        return out

    def replayed(self) -> Counter[str]:
        with self._lock:
            return Counter(r.kind for r in self.records if r.replayed)

    def server_errors(self) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.status is not None and r.status >= 500]

    def no_answer(self) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.status is None]


@dataclass
class Answer:
    status: int | None
    body: Any = None
    in_doubt: bool = False  # sent, but no answer came back: the server may or may not have acted
    attempts: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def get(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default) if isinstance(self.body, dict) else default


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the request surely never reached a server (nothing listened on the port)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = repr(exc)
    return "NewConnectionError" in text or "Connection refused" in text


class Client:
    """HTTP to a random instance per attempt, with the retry rules of a mobile client (module docstring)."""

    def __init__(self, urls: list[str], recorder: Recorder, rng: random.Random, *, give_up_after: float = 90.0,
                 read_timeout: float = 60.0, impatience: float = 0.0) -> None:
        self.urls, self.recorder, self.rng = urls, recorder, rng
        self.give_up_after, self.read_timeout = give_up_after, read_timeout
        # The share of POSTs whose first attempt stops waiting after a fraction of a second (a flaky mobile
        # network): the server goes on and usually commits, so the resend meets the first attempt's effect.
        self.impatience = impatience
        self.session = requests.Session()

    def call(self, kind: str, method: str, path: str, *, token: str | None = None, body: Any = None,
             key: str | None = None, params: dict[str, Any] | None = None, repeatable: bool = False) -> Answer:
        """``repeatable``: a POST whose repetition is harmless (a login, asking for a code), resent like a GET."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["Idempotency-Key"] = key
        resend_when_in_doubt = method == "GET" or key is not None or repeatable
        give_up_at = time.monotonic() + self.give_up_after
        attempt = 0
        while True:
            attempt += 1
            instance = self.rng.randrange(len(self.urls))
            impatient = method == "POST" and attempt == 1 and self.rng.random() < self.impatience
            read_timeout = self.rng.uniform(0.02, 0.3) if impatient else self.read_timeout
            started = time.monotonic()
            try:
                response = self.session.request(method, self.urls[instance] + API + path, json=body, params=params,
                                                headers=headers, timeout=(5.0, read_timeout))
            except requests.RequestException as exc:
                not_sent = _not_sent(exc)
                error = "refused" if not_sent else "gave up waiting" if impatient else type(exc).__name__
                self.recorder.add(Record(time.time(), kind, method, path, instance, None, error,
                                         time.monotonic() - started, attempt, key=key))
                if not not_sent and not resend_when_in_doubt:
                    return Answer(None, in_doubt=True, attempts=attempt, error=error)
                if time.monotonic() >= give_up_at:
                    return Answer(None, in_doubt=not not_sent or attempt > 1, attempts=attempt, error=error)
                time.sleep(min(0.05 * 2 ** attempt, 1.0) * self.rng.uniform(0.5, 1.0))
                continue
            try:
                payload = response.json() if response.content else None
            except ValueError:
                payload = response.text[:500]
            self.recorder.add(Record(
                time.time(), kind, method, path, instance, response.status_code, None, time.monotonic() - started,
                attempt, response.headers.get("Idempotent-Replayed") == "true", key,
                payload.get("code") if isinstance(payload, dict) and response.status_code >= 400 else None,
                response.headers.get("X-Request-ID")))
            return Answer(response.status_code, payload, attempts=attempt)


# --- the SMS inbox --------------------------------------------------------------------------------------------


class Inbox:
    """Reads the console sender's JSON-lines file (appended by every dispatcher) incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._by_phone: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        with self._lock:
            try:
                with self.path.open("rb") as handle:
                    handle.seek(self._offset)
                    chunk = handle.read()
            except FileNotFoundError:
                return
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()  # an incomplete last line waits for its end
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                self._by_phone.setdefault(message["to"], []).append(message)

    def messages(self, phone: str, event: str | None = None) -> list[dict[str, Any]]:
        self._refresh()
        with self._lock:
            return [m for m in self._by_phone.get(phone, []) if event is None or m["event"] == event]

    def stamps(self, phone: str) -> set[str]:
        return {m["created_at"] for m in self.messages(phone)}

    def wait_code(self, phone: str, before: set[str], timeout: float = 60.0) -> str | None:
        """The newest code sent to ``phone`` after ``before`` was taken (only the newest code is valid), or
        ``"account_exists"`` when what came is the notice that the number already has an account."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fresh = [m for m in self.messages(phone) if m["created_at"] not in before
                     and m["event"] in ("sms_code", "account_exists")]
            if fresh:
                newest = max(fresh, key=lambda m: m["created_at"])
                if newest["event"] == "account_exists":
                    return "account_exists"
                found = _CODE.search(newest["body"])
                if found:
                    return found.group()
            time.sleep(0.05)
        return None


# --- what the answers promised ----------------------------------------------------------------------------------


@dataclass
class User:
    id: str
    phone: str
    token: str
    device: str
    name: str = ""
    card_id: str | None = None
    floor: int = 0  # what the owner knows is available (incoming payments from others come on top)

    @property
    def verified(self) -> bool:
        return self.card_id is not None


@dataclass
class TradeKnowledge:
    buyer: str
    seller: str
    total: int
    steps: list[str] = field(default_factory=list)  # 2xx steps in order
    expected_status: str = "WAIT_BUYER_PAY"
    refunds: dict[str, int] = field(default_factory=dict)  # refund id -> amount, agreed with a 2xx
    requested_refunds: list[str] = field(default_factory=list)
    in_doubt: bool = False  # a step's outcome stayed unknown: the final state may be further on


class Books:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.users: dict[str, User] = {}
        self.balance: Counter[str] = Counter()  # the posted balance each account must end with
        self.uncertain: dict[str, str] = {}  # user id -> why its balance cannot be predicted
        self.topups: list[tuple[str, str, int]] = []  # (top-up id, user id, amount) answered 2xx
        self.transfers: list[tuple[str, str, str, int]] = []  # (transfer id, payer, payee, amount)
        self.withdrawals: list[tuple[str, str, int]] = []
        self.card_pays: list[tuple[str, str]] = []  # (buyer id, the top-up's request key) of trades paid "with card"
        self.trades: dict[str, TradeKnowledge] = {}
        self.titles: dict[str, str] = {}  # title -> the trade the client uses (a resent open may make another)
        self.logins = 0
        self.registrations = 0
        self.stories: Counter[str] = Counter()
        self.surprises: list[str] = []
        self.resolved_in_doubt: Counter[str] = Counter()

    def add_user(self, user: User) -> None:
        with self._lock:
            self.users[user.id] = user
            self.registrations += 1

    def credit(self, user_id: str, amount: int) -> None:
        with self._lock:
            self.balance[user_id] += amount

    def doubt(self, user_id: str, why: str) -> None:
        with self._lock:
            self.uncertain.setdefault(user_id, why)

    def surprise(self, text: str) -> None:
        with self._lock:
            self.surprises.append(text)

    def may_have_paid_the_limit(self, payer_id: str, payee_id: str) -> bool:
        """Whether the payer may have made ``PAYMENTS_PER_PAYEE_DAILY`` payments to the payee today: as many answered
        201, or some whose answer never came (the payer's balance in doubt), which may have gone through."""
        with self._lock:
            made = sum(1 for _id, payer, payee, _amount in self.transfers if (payer, payee) == (payer_id, payee_id))
            return made >= PAYMENTS_PER_PAYEE_DAILY or payer_id in self.uncertain

    def note(self, attr: str, item: Any) -> None:
        with self._lock:
            getattr(self, attr).append(item)

    def count(self, counter: str, key: str) -> None:
        with self._lock:
            getattr(self, counter)[key] += 1

    def trade(self, trade_id: str) -> TradeKnowledge:
        with self._lock:
            return self.trades[trade_id]

    def others(self, user_id: str, rng: random.Random) -> User | None:
        with self._lock:
            candidates = [u for u in self.users.values() if u.id != user_id]
        return rng.choice(candidates) if candidates else None


class Unexpected(Exception):
    """A step got an answer a correct service would not give; the story stops and it is reported."""


# --- one actor ------------------------------------------------------------------------------------------------------


STORIES = {
    "register": 8, "login": 8, "topup": 8, "transfer": 22, "trade": 22, "refund_before_shipping": 10,
    "partial_refund_after_shipping": 6, "withdrawal": 4, "reads": 12,
}


class Actor(threading.Thread):
    def __init__(self, workload: Workload, index: int, seed: int) -> None:
        super().__init__(name=f"actor-{index}", daemon=True)
        self.wl, self.index = workload, index
        self.rng = random.Random(seed)
        self.client = Client(workload.urls, workload.recorder, self.rng, give_up_after=workload.give_up_after,
                             impatience=workload.impatience)
        self.books, self.inbox = workload.books, workload.inbox
        self.users: list[User] = []

    # --- plumbing ---

    def call(self, kind: str, method: str, path: str, **kwargs: Any) -> Answer:
        return self.client.call(kind, method, path, **kwargs)

    def expect(self, answer: Answer, kind: str, *statuses: int) -> Answer:
        if answer.status not in statuses:
            raise Unexpected(f"{kind}: {answer.status} {answer.error or ''} {str(answer.body)[:300]}")
        return answer

    def money(self, kind: str, path: str, user: User, **body: Any) -> Answer:
        """A money POST: one key for every attempt (the client resends it after a lost answer)."""
        return self.call(kind, "POST", path, token=user.token, key=f"{kind}-{uuid.uuid4().hex}",
                         body={"payment_password": PAYMENT_PASSWORD, **body})

    def run(self) -> None:
        try:
            for _ in range(3):
                self.guard("setup", lambda: self.new_user(verified=True, top_up=True))
            while time.monotonic() < self.wl.stop_at:
                story = self.rng.choices(list(STORIES), weights=list(STORIES.values()))[0]
                self.guard(story, getattr(self, f"story_{story}"))
        except Exception:  # a broken actor is reported, never silently lost
            self.books.surprise(f"actor {self.index} crashed:\n{traceback.format_exc()}")

    def guard(self, story: str, fn: Any) -> None:
        try:
            fn()
            self.books.count("stories", story)
        except Unexpected as exc:
            self.books.surprise(f"{story}: {exc}")
            self.books.count("stories", f"{story} (stopped)")

    def verified_pair(self) -> tuple[User, User] | None:
        verified = [u for u in self.users if u.verified]
        if len(verified) < 2:
            return None
        buyer, seller = self.rng.sample(verified, 2)
        return buyer, seller

    def ensure_funds(self, user: User, amount: int) -> None:
        if user.floor < amount:
            self.top_up(user, amount - user.floor + self.rng.randrange(20_000, 80_000))

    # --- accounts ---

    def sms_code(self, phone: str, purpose: str) -> str:
        before = self.inbox.stamps(phone)
        for _ in range(3):
            answer = self.call("sms_code", "POST", "/sms-codes", repeatable=True,
                               body={"phone": phone, "purpose": purpose, "locale": "en"})
            if answer.in_doubt or answer.status == 202:
                code = self.inbox.wait_code(phone, before)
                if code:
                    return code
            else:
                self.expect(answer, "sms_code", 202)
        raise Unexpected(f"no {purpose} code reached {phone} in the console file")

    def log_in(self, phone: str, device: str, sms_code: str | None = None) -> Answer:
        body = {"phone": phone, "login_password": LOGIN_PASSWORD, "device_id": device}
        if sms_code:  # a code is spent by the first try that reaches a server: not resent blindly
            body["sms_code"] = sms_code
        return self.call("login", "POST", "/sessions", body=body, repeatable=sms_code is None)

    def register(self) -> User:
        phone, device = _phone(), f"phone-{uuid.uuid4().hex[:8]}"
        # Each round may be spoilt by a lost answer or by a resent code request (two codes, the older one read
        # first: only the newest is valid), so allow several.
        for _ in range(8):
            # After a lost answer this also tells whether the account was made: an existing number gets an
            # "account exists" notice instead of a code.
            code = self.sms_code(phone, "register")
            if code == "account_exists":
                login = self.expect(self.log_in(phone, device), "login", 201)
                me = self.expect(self.call("me", "GET", "/me", token=login.body["access_token"]), "me", 200)
                user = User(me.body["id"], phone, login.body["access_token"], device)
                self.books.count("resolved_in_doubt", "register")
                break
            answer = self.call("register", "POST", "/users", body={
                "phone": phone, "sms_code": code, "login_password": LOGIN_PASSWORD,
                "payment_password": PAYMENT_PASSWORD, "device_id": device, "locale": "en"})
            if answer.status == 201:
                user = User(answer.body["user"]["id"], phone, answer.body["access_token"], device)
                break
            if answer.in_doubt or answer.get("code") in ("phone_taken", "invalid_sms_code"):
                continue  # made or not? A code overtaken by a newer one? Ask again and see what comes.
            raise Unexpected(f"register: {answer.status} {answer.body}")
        else:
            raise Unexpected(f"could not register {phone}")
        self.books.add_user(user)
        self.users.append(user)
        return user

    def verify(self, user: User) -> None:
        name = self.rng.choice(NAMES)
        body = {"real_name": name, "id_number": _id_number()}
        for _ in range(5):
            answer = self.call("identity", "POST", "/me/identity", token=user.token, body=body, repeatable=True)
            if answer.status in (200, 201):
                break
            if not answer.in_doubt:
                raise Unexpected(f"identity: {answer.status} {answer.body}")
        else:
            raise Unexpected("identity: no answer")
        user.name = name
        card, bank = _card(), self.rng.choice(BANKS)
        for _ in range(5):
            answer = self.call("bind_card", "POST", "/me/bank-cards", token=user.token, body={
                "card_number": card, "holder_name": name, "bank_code": bank, "payment_password": PAYMENT_PASSWORD})
            if answer.status == 201:
                user.card_id = answer.body["id"]
                return
            if answer.in_doubt or answer.status == 409:
                cards = self.expect(self.call("cards", "GET", "/me/bank-cards", token=user.token), "cards", 200)
                bound = [c for c in cards.body["data"] if c["masked"].endswith(card[-4:])]
                if bound:
                    user.card_id = bound[0]["id"]
                    self.books.count("resolved_in_doubt", "bind_card")
                    return
                continue
            raise Unexpected(f"bind_card: {answer.status} {answer.body}")
        raise Unexpected("bind_card: no answer")

    def new_user(self, *, verified: bool, top_up: bool) -> User:
        user = self.register()
        if verified:
            self.verify(user)
            if top_up:
                self.top_up(user, self.rng.randrange(100_000, 300_000))
        return user

    # --- money ---

    def top_up(self, user: User, amount: int) -> None:
        if user.card_id is None:
            self.verify(user)
        answer = self.money("topup", "/topups", user, amount=amount, bank_card_id=user.card_id)
        if answer.status == 201 and answer.get("status") == "succeeded":
            self.books.note("topups", (answer.body["id"], user.id, amount))
            self.books.credit(user.id, amount)
            user.floor += amount
            return
        if answer.status is None:
            self.books.doubt(user.id, "a top-up never got an answer")
        raise Unexpected(f"topup: {answer.status} {answer.error or ''} {answer.body}")

    def transfer(self, payer: User, payee: User, amount: int) -> None:
        self.ensure_funds(payer, amount)
        answer = self.money("transfer", "/transfers", payer, amount=amount, to_phone=payee.phone, note="e2e")
        if answer.status == 201:
            self.books.note("transfers", (answer.body["id"], payer.id, payee.id, amount))
            self.books.credit(payer.id, -amount)
            self.books.credit(payee.id, amount)
            payer.floor -= amount
            return
        if (answer.status, answer.get("code")) == (422, "payee_limit_exceeded") and self.books.may_have_paid_the_limit(
                payer.id, payee.id):
            return  # the day's payments to this payee are used up (LIMIT_PAYMENTS_PER_PAYEE_DAILY): nothing moved
        if answer.status is None:
            self.books.doubt(payer.id, "a transfer never got an answer")
            self.books.doubt(payee.id, "a transfer to it never got an answer")
        raise Unexpected(f"transfer: {answer.status} {answer.error or ''} {answer.body}")

    # --- trades ---

    def get_trade(self, user: User, trade_id: str) -> dict[str, Any]:
        return self.expect(self.call("trade_get", "GET", f"/trades/{trade_id}", token=user.token), "trade_get",
                           200).body

    def open_trade(self, buyer: User, seller: User, amount: int, shipping: int) -> str:
        """Opening a trade takes no Idempotency-Key: after a lost answer the client looks for the trade by its
        (unique) title for a few seconds (the first attempt may still be running) before sending it again."""
        title = f"e2e item {uuid.uuid4().hex[:12]}"
        body = {"seller_phone": seller.phone, "title": title, "amount": amount, "shipping_fee": shipping}

        def find() -> str | None:
            listed = self.expect(self.call("trade_list", "GET", "/trades", token=buyer.token,
                                           params={"role": "buyer", "limit": 100}), "trade_list", 200)
            return next((t["id"] for t in listed.body["data"] if t["title"] == title), None)

        trade_id = None
        for _ in range(5):
            answer = self.call("trade_open", "POST", "/trades", token=buyer.token, body=body)
            if answer.status == 201:
                trade_id = answer.body["id"]
                break
            if not answer.in_doubt:
                raise Unexpected(f"trade_open: {answer.status} {answer.body}")
            look_until = time.monotonic() + 5
            while trade_id is None and time.monotonic() < look_until:
                trade_id = find()
                if trade_id is None:
                    time.sleep(0.25)
            if trade_id is not None:
                self.books.count("resolved_in_doubt", "trade_open")
                break
        else:
            raise Unexpected("trade_open: no answer")
        with self.books._lock:
            self.books.trades[trade_id] = TradeKnowledge(buyer.id, seller.id, amount + shipping, ["open"])
            self.books.titles[title] = trade_id
        return trade_id

    def _step(self, trade_id: str, step: str, status: str) -> None:
        knowledge = self.books.trade(trade_id)
        knowledge.steps.append(step)
        knowledge.expected_status = status

    def pay(self, buyer: User, trade_id: str, *, with_card: bool = False) -> None:
        """Pay from the balance, or (``with_card``) let the service top the shortfall up from the buyer's card
        first, in the same request: what the card gave is found later by the request's key."""
        knowledge = self.books.trade(trade_id)
        key = f"trade_pay-{uuid.uuid4().hex}"
        body: dict[str, Any] = {"payment_password": PAYMENT_PASSWORD}
        if with_card:
            body["bank_card_id"] = buyer.card_id
        else:
            self.ensure_funds(buyer, knowledge.total)
        answer = self.call("trade_pay", "POST", f"/trades/{trade_id}/pay", token=buyer.token, key=key, body=body)
        if answer.status == 200:
            self._step(trade_id, "pay", answer.body["status"])
            self.books.credit(buyer.id, -knowledge.total)
            if with_card:
                # The top-up is named after the request (wallet.funds.request_key): its key and its fingerprint.
                request_hash = fingerprint("POST", f"{API}/trades/{trade_id}/pay", {"bank_card_id": buyer.card_id})
                self.books.note("card_pays", (buyer.id, request_key(buyer.id, key, request_hash)))
                buyer.floor = max(0, buyer.floor - knowledge.total)
            else:
                buyer.floor -= knowledge.total
            return
        if answer.status is None:
            knowledge.in_doubt = True
            self.books.doubt(buyer.id, "a trade payment never got an answer")
        raise Unexpected(f"trade_pay: {answer.status} {answer.error or ''} {answer.body}")

    def ship(self, seller: User, trade_id: str) -> None:
        body = {"carrier": "SF Express", "tracking_number": f"SF{self.rng.randrange(10**9, 10**10)}"}
        doubted = False
        for _ in range(5):
            answer = self.call("trade_ship", "POST", f"/trades/{trade_id}/ship", token=seller.token, body=body)
            if answer.status == 200:
                self._step(trade_id, "ship", answer.body["status"])
                return
            if not (answer.in_doubt or (doubted and answer.status == 409)):
                raise Unexpected(f"trade_ship: {answer.status} {answer.body}")
            doubted = True  # a 409 after a lost answer: the lost attempt may have shipped it
            if self.get_trade(seller, trade_id)["status"] == "WAIT_BUYER_CONFIRM_GOODS":
                self._step(trade_id, "ship", "WAIT_BUYER_CONFIRM_GOODS")
                self.books.count("resolved_in_doubt", "trade_ship")
                return
        raise Unexpected("trade_ship: no answer")

    def confirm(self, buyer: User, seller: User, trade_id: str) -> None:
        answer = self.money("trade_confirm", f"/trades/{trade_id}/confirm", buyer)
        if answer.status == 200 and answer.body["status"] == "TRADE_FINISHED":
            self._step(trade_id, "confirm", "TRADE_FINISHED")
            net = answer.body["released_amount"] - answer.body["fee_amount"]
            self.books.credit(seller.id, net)
            seller.floor += net
            return
        if answer.status is None:
            self.books.trade(trade_id).in_doubt = True
            self.books.doubt(seller.id, "a confirmation never got an answer")
        raise Unexpected(f"trade_confirm: {answer.status} {answer.error or ''} {answer.body}")

    def request_refund(self, buyer: User, trade_id: str, amount: int) -> str:
        body = {"amount": amount, "reason": "changed my mind"}
        doubted = False
        for _ in range(5):
            answer = self.call("refund_request", "POST", f"/trades/{trade_id}/refunds", token=buyer.token, body=body)
            if answer.status == 201:
                refund_id = answer.body["id"]
                break
            if not (answer.in_doubt or (doubted and answer.get("code") == "refund_in_progress")):
                raise Unexpected(f"refund_request: {answer.status} {answer.body}")
            doubted = True
            open_ = [r["id"] for r in self.get_trade(buyer, trade_id)["refunds"] if r["status"] == "WAIT_SELLER_AGREE"]
            if open_:
                refund_id = open_[0]
                self.books.count("resolved_in_doubt", "refund_request")
                break
        else:
            raise Unexpected("refund_request: no answer")
        self.books.trade(trade_id).requested_refunds.append(refund_id)
        return refund_id

    def agree_refund(self, buyer: User, seller: User, trade_id: str, refund_id: str, amount: int) -> None:
        """Agreeing moves money but takes no Idempotency-Key: the refund's state says whether a lost attempt
        went through (a second agreement is refused with 409)."""
        path = f"/trades/{trade_id}/refunds/{refund_id}/agree"
        doubted = False
        for _ in range(5):
            answer = self.call("refund_agree", "POST", path, token=seller.token,
                               body={"payment_password": PAYMENT_PASSWORD})
            done = answer.status == 200 and answer.body["status"] == "REFUND_SUCCESS"
            if not done and (answer.in_doubt or (doubted and answer.status == 409)):
                doubted = True
                refunds = {r["id"]: r for r in self.get_trade(seller, trade_id)["refunds"]}
                done = refunds.get(refund_id, {}).get("status") == "REFUND_SUCCESS"
                if not done:
                    continue
                self.books.count("resolved_in_doubt", "refund_agree")
            if not done:
                raise Unexpected(f"refund_agree: {answer.status} {answer.body}")
            knowledge = self.books.trade(trade_id)
            knowledge.refunds[refund_id] = amount
            knowledge.steps.append("refund_agree")
            knowledge.expected_status = self.get_trade(buyer, trade_id)["status"]
            self.books.credit(buyer.id, amount)
            buyer.floor += amount
            return
        raise Unexpected("refund_agree: no answer")

    # --- stories ---

    def story_register(self) -> None:
        self.new_user(verified=self.rng.random() < 0.5, top_up=True)

    def story_login(self) -> None:
        user = self.rng.choice(self.users)
        if self.rng.random() < 0.25:  # a new device: needs an SMS code, and the owner is told
            device = f"tablet-{uuid.uuid4().hex[:8]}"
            first = self.log_in(user.phone, device)
            if first.status == 201:  # a lost answer of an earlier try already trusted the device
                user.token, user.device = first.body["access_token"], device
                return
            if first.get("code") != "device_verification_required" and not first.in_doubt:
                raise Unexpected(f"login (new device): {first.status} {first.body}")
            for _ in range(6):
                answer = self.log_in(user.phone, device, self.sms_code(user.phone, "login"))
                if answer.in_doubt:  # the device is trusted now if that try went through
                    answer = self.log_in(user.phone, device)
                    if answer.get("code") == "device_verification_required":
                        continue
                    self.books.count("resolved_in_doubt", "login")
                if answer.get("code") == "invalid_sms_code":
                    # A resent code request made two codes and the older one came first: only the newest is
                    # valid. Ask again.
                    continue
                break
            self.expect(answer, "login", 201)
            user.device = device
        else:
            answer = self.expect(self.log_in(user.phone, user.device), "login", 201)
        user.token = answer.body["access_token"]
        with self.books._lock:
            self.books.logins += 1

    def story_topup(self) -> None:
        user = self.rng.choice(self.users)
        self.top_up(user, self.rng.randrange(5_000, 50_000))

    def story_transfer(self) -> None:
        verified = [u for u in self.users if u.verified]
        payer = self.rng.choice(verified)
        payee = self.books.others(payer.id, self.rng)
        if payee is not None:
            self.transfer(payer, payee, self.rng.randrange(100, 3_000))

    def story_withdrawal(self) -> None:
        user = self.rng.choice([u for u in self.users if u.verified])
        amount = self.rng.randrange(100, 2_000)
        self.ensure_funds(user, amount)
        answer = self.money("withdrawal", "/withdrawals", user, amount=amount, bank_card_id=user.card_id)
        if answer.status == 202:
            self.books.note("withdrawals", (answer.body["id"], user.id, amount))
            self.books.credit(user.id, -amount)
            user.floor -= amount
            return
        if answer.status is None:
            self.books.doubt(user.id, "a withdrawal never got an answer")
        raise Unexpected(f"withdrawal: {answer.status} {answer.error or ''} {answer.body}")

    def story_trade(self) -> None:
        pair = self.verified_pair()
        if pair is None:
            return
        buyer, seller = pair
        trade_id = self.open_trade(buyer, seller, self.rng.randrange(1_000, 20_000), self.rng.choice((0, 500, 1000)))
        stop = self.rng.random()
        if stop < 0.1:
            return  # left unpaid
        self.pay(buyer, trade_id, with_card=self.rng.random() < 0.3)
        if stop < 0.2:
            return  # paid, never shipped
        self.ship(seller, trade_id)
        if stop < 0.3:
            return  # shipped, not confirmed yet
        self.confirm(buyer, seller, trade_id)

    def story_refund_before_shipping(self) -> None:
        pair = self.verified_pair()
        if pair is None:
            return
        buyer, seller = pair
        trade_id = self.open_trade(buyer, seller, self.rng.randrange(1_000, 20_000), 500)
        self.pay(buyer, trade_id)
        total = self.books.trade(trade_id).total
        refund_id = self.request_refund(buyer, trade_id, total)
        self.agree_refund(buyer, seller, trade_id, refund_id, total)

    def story_partial_refund_after_shipping(self) -> None:
        pair = self.verified_pair()
        if pair is None:
            return
        buyer, seller = pair
        trade_id = self.open_trade(buyer, seller, self.rng.randrange(5_000, 20_000), 0)
        self.pay(buyer, trade_id)
        self.ship(seller, trade_id)
        part = self.rng.randrange(100, 2_000)
        refund_id = self.request_refund(buyer, trade_id, part)
        self.agree_refund(buyer, seller, trade_id, refund_id, part)
        self.confirm(buyer, seller, trade_id)

    def story_reads(self) -> None:
        user = self.rng.choice(self.users)
        self.expect(self.call("wallet", "GET", "/wallet", token=user.token), "wallet", 200)
        self.expect(self.call("statement", "GET", "/wallet/transactions", token=user.token, params={"limit": 20}),
                    "statement", 200)
        trades = self.expect(self.call("trade_list", "GET", "/trades", token=user.token), "trade_list", 200)
        if trades.body["data"]:
            self.get_trade(user, self.rng.choice(trades.body["data"])["id"])


# --- the whole workload ---------------------------------------------------------------------------------------------


class Workload:
    def __init__(self, urls: list[str], sms_file: Path, *, seed: int | None = None,
                 give_up_after: float = 90.0, impatience: float = 0.0) -> None:
        self.impatience = impatience
        self.urls = urls
        self.inbox = Inbox(sms_file)
        self.recorder = Recorder()
        self.books = Books()
        self.seed = seed if seed is not None else random.randrange(2**32)
        self.give_up_after = give_up_after
        self.stop_at = 0.0
        self.started = self.finished = 0.0

    def run(self, seconds: float, threads: int, join_timeout: float = 300.0) -> None:
        """Drive the mix for ``seconds`` (stories in progress then finish); raises if an actor hangs."""
        self.started = time.monotonic()
        self.stop_at = self.started + seconds
        actors = [Actor(self, i, self.seed + i) for i in range(threads)]
        for actor in actors:
            actor.start()
        deadline = self.stop_at + join_timeout
        for actor in actors:
            actor.join(max(0.0, deadline - time.monotonic()))
        hung = [a.name for a in actors if a.is_alive()]
        self.finished = time.monotonic()
        if hung:
            raise TimeoutError(f"actors still running {join_timeout:.0f}s after the end of the load: {hung}")

    def summary(self) -> dict[str, Any]:
        by = self.recorder.by_kind_and_status()
        kinds: dict[str, dict[str, int]] = {}
        for (kind, status), n in sorted(by.items()):
            kinds.setdefault(kind, {})[status] = n
        books = self.books
        return {
            "seed": self.seed,
            "seconds": round(self.finished - self.started, 1),
            "requests": sum(by.values()),
            "answered": sum(n for (_k, s), n in by.items() if s.isdigit()),
            "requests_by_kind_and_status": kinds,
            "latency_ms": self.recorder.latency_ms(),
            "stories": dict(sorted(books.stories.items())),
            "accounts": len(books.users),
            "logins": books.logins,
            "topups": len(books.topups),
            "transfers": len(books.transfers),
            "withdrawals": len(books.withdrawals),
            "trades paid with a card top-up of the shortfall": len(books.card_pays),
            "trades": len(books.trades),
            "resolved_in_doubt": dict(books.resolved_in_doubt),
            "answers replayed from an Idempotency-Key": dict(self.recorder.replayed()),
            "uncertain_accounts": len(books.uncertain),
            "surprises": len(books.surprises),
        }
