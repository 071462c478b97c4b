"""Fixtures: a real database (SQLite, or PostgreSQL when WALLET_TEST_DATABASE_URL is set) migrated once per
run with Alembic and emptied before each test, a frozen clock, the console SMS sender writing to a temp file,
and an ``api`` helper that drives the HTTP API like a mobile client would."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, has_request_context, request
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import Engine, create_engine, event, make_url, text

from app import create_app
from core.clock import FrozenClock
from core.db import blocks_if_any, db
from notifications import dispatcher
from tests.documented_errors import assert_none_found, watch
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone

PG_URL = os.environ.get("WALLET_TEST_DATABASE_URL", "")


def _reset_postgres(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if PG_URL:
        _reset_postgres(PG_URL)
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'wallet.db'}"
    app = create_app({"DATABASE_URL": url, "WALLET_ENV": "test"})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


def empty_all_tables() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for name in tables:
            db.session.execute(text(f"DELETE FROM {name}"))
    db.session.commit()


@pytest.fixture
def scratch_url(tmp_path):
    """A database of its own, since the test moves it between revisions."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    name = f"{url.database}_migrations"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(database_url: str, clock: FrozenClock, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "WALLET_ENV": "test",
            "CLOCK": clock,
            "RATELIMIT_ENABLED": False,
            "SMS_CONSOLE_FILE": str(tmp_path / "sms.jsonl"),
        }
    )
    watch(app)  # every 4xx problem it answers must be documented for its operation
    with app.app_context():
        empty_all_tables()
    yield app
    with app.app_context():
        db.engine.dispose()
    assert_none_found(app)


@pytest.fixture(autouse=True)
def _requests_send_statements_only_inside_blocks() -> Iterator[None]:
    """Every statement a request sends runs inside a transaction block (``core.db``). One sent outside them, by the
    ORM reading what a block had committed, began a transaction of the session's own that lasted until the request
    ended: on SQLite a write lock, on PostgreSQL a transaction left idle. Any test whose requests send one fails,
    naming the request and the statement. A ``core.db.snapshot`` connection is exempt: it is one of its own, which
    its ``with`` block ends."""
    strays: list[str] = []

    def seen(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        # The application's own connections only, not a test's (one that ends backends from inside a request).
        if (has_request_context() and conn.engine.pool is db.engine.pool
                and not conn.get_execution_options().get("snapshot")):
            state = blocks_if_any()
            if state is None or not state.depth:
                strays.append(f"{request.method} {request.path}: {' '.join(statement.split())[:100]}")

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert not strays, f"statements sent outside any block while serving a request: {strays[:5]}"


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Inbox:
    """What the console sender delivered: runs the dispatcher, then reads the JSON-lines file."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.path = Path(app.config["SMS_CONSOLE_FILE"])

    def messages(self, to: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        with self.app.app_context():
            dispatcher.dispatch_all(self.app.extensions["sms_sender"])
        if not self.path.exists():
            return []
        lines = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]
        return [m for m in lines if (to is None or m["to"] == to) and (event is None or m["event"] == event)]

    def last_code(self, phone: str) -> str:
        codes = self.messages(to=phone, event="sms_code")
        assert codes, f"no code was sent to {phone}"
        found = re.search(r"(?<!\d)\d{6}(?!\d)", codes[-1]["body"])
        assert found, codes[-1]["body"]
        return found.group()


@pytest.fixture
def inbox(app: Flask) -> Inbox:
    return Inbox(app)


class Api:
    """A mobile client: registers, logs in, and calls endpoints with its bearer token."""

    def __init__(self, client: FlaskClient, inbox: Inbox) -> None:
        self.client, self.inbox = client, inbox

    def code(self, phone: str, purpose: str) -> str:
        response = self.client.post("/api/v1/sms-codes", json={"phone": phone, "purpose": purpose})
        assert response.status_code == 202, response.json
        return self.inbox.last_code(phone)

    def register(self, phone: str | None = None, *, device_id: str = "phone-1", locale: str = "zh",
                 login_password: str = LOGIN_PASSWORD, payment_password: str = PAYMENT_PASSWORD) -> dict[str, Any]:
        phone = phone or make_phone()
        response = self.client.post("/api/v1/users", json={
            "phone": phone, "sms_code": self.code(phone, "register"), "login_password": login_password,
            "payment_password": payment_password, "device_id": device_id, "locale": locale,
        })
        assert response.status_code == 201, response.json
        body = response.json
        assert body is not None
        return {**body, "phone": phone, "headers": self.bearer(body["access_token"])}

    def login(self, phone: str, password: str = LOGIN_PASSWORD, device_id: str = "phone-1", **extra: Any):
        return self.client.post("/api/v1/sessions", json={
            "phone": phone, "login_password": password, "device_id": device_id, **extra,
        })

    def verified(self, *, real_name: str = "张三", card_ending: str = "", bank_code: str = "ICBC",
                 **register: Any) -> dict[str, Any]:
        """A registered user with a verified identity and one bound card (``card_id``)."""
        from tests.factories_ids import make_card_number, make_id_number

        account = self.register(**register)
        identity = self.client.post("/api/v1/me/identity", headers=account["headers"],
                                    json={"real_name": real_name, "id_number": make_id_number()})
        assert identity.status_code in (200, 201), identity.json
        card = self.client.post("/api/v1/me/bank-cards", headers=account["headers"], json={
            "card_number": make_card_number(ending=card_ending), "holder_name": real_name, "bank_code": bank_code,
            "payment_password": PAYMENT_PASSWORD})
        assert card.status_code == 201, card.json
        return {**account, "card_id": card.json["id"]}

    def money(self, path: str, account: dict[str, Any], key: str | None = None, **body: Any):
        """POST a money movement with the payment password and a fresh (or given) Idempotency-Key."""
        headers = {**account["headers"], "Idempotency-Key": key or uuid.uuid4().hex}
        return self.client.post(path, headers=headers, json={"payment_password": PAYMENT_PASSWORD, **body})

    def relogin(self, account: dict[str, Any], device_id: str = "phone-1") -> dict[str, Any]:
        """Fresh tokens for ``account`` (after the clock moved past the access token's life)."""
        response = self.login(account["phone"], device_id=device_id)
        assert response.status_code == 201, response.json
        account["headers"] = self.bearer(response.json["access_token"])
        return account

    def balance(self, account: dict[str, Any]) -> int:
        return self.client.get("/api/v1/wallet", headers=account["headers"]).json["available"]

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(client: FlaskClient, inbox: Inbox) -> Api:
    return Api(client, inbox)


@pytest.fixture
def people(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """A buyer with 5,000.00 in the wallet and a seller, both verified: the escrow tests' two parties (a module may
    define its own)."""
    buyer = api.verified(real_name="李四", locale="en")
    assert api.money("/api/v1/topups", buyer, amount=500000, bank_card_id=buyer["card_id"]).status_code == 201
    seller = api.verified(real_name="王五", locale="en")
    return buyer, seller


@pytest.fixture
def staff(api: Api, app: Flask) -> dict[str, Any]:
    """A registered user made staff (``flask users grant-staff``): who decides the dispute tests' disputes."""
    from tests.api.escrow_helpers import grant_staff

    return grant_staff(api, app)
