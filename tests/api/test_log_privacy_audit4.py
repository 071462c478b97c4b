"""Found by the logs audit (audit 4): what the service writes to its logs when something fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from core.db import db
from core.observability import JsonFormatter, RequestIdFilter
from tests.conftest import PG_URL
from tests.factories import LOGIN_PASSWORD, PAYMENT_PASSWORD, make_phone


class JsonLines(logging.Handler):
    """Every record, as the production formatter writes it (traceback included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def log_lines() -> Iterator[JsonLines]:
    handler, root = JsonLines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@contextmanager
def database_guard(app, add: str, drop: str) -> Iterator[None]:
    """A guard the database enforces for the length of the block (as a migration's CHECK or unique index would), so
    that a write the application does not expect to fail fails."""
    with app.app_context():
        db.session.execute(text(add))
        db.session.commit()
    try:
        yield
    finally:
        with app.app_context():
            db.session.execute(text(drop))
            db.session.commit()


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL's errors quote the row; SQLite's name only the constraint")
def test_a_row_the_database_refuses_is_not_written_to_the_log(app, api, log_lines):
    """An unexpected database error is a 500 whose traceback is logged. The statement's values were hidden
    (``hide_parameters``), but PostgreSQL's own message carries a DETAIL line quoting the row: "Failing row contains
    (usr_..., +12025550123, $argon2id$..., email, ..., totp_secret, ...)" for a CHECK or NOT NULL, "Key
    (phone)=(+12025550123) already exists" for a unique index. Every such 500 wrote the user's phone number (and
    whatever else the row held: email, the authenticator's secret) to the log, twice (the driver's error and
    SQLAlchemy's). The log still names the table and the constraint."""
    phone = make_phone()
    code = api.code(phone, "register")
    with database_guard(app, "ALTER TABLE users ADD CONSTRAINT audit4_refuse CHECK (length(phone) > 15) NOT VALID",
                        "ALTER TABLE users DROP CONSTRAINT audit4_refuse"):
        failed = api.client.post("/api/v1/users", json={
            "phone": phone, "sms_code": code, "login_password": LOGIN_PASSWORD,
            "payment_password": PAYMENT_PASSWORD, "device_id": "phone-1", "email": "someone@example.com"})
    assert failed.status_code == 500 and failed.json["code"] == "internal_error"

    other = make_phone()
    api.code(other, "register")
    with database_guard(app, "CREATE UNIQUE INDEX audit4_one_code ON sms_codes (phone)",
                        "DROP INDEX audit4_one_code"):
        again = api.client.post("/api/v1/sms-codes", json={"phone": other, "purpose": "register"})
    assert again.status_code == 500 and again.json["code"] == "internal_error"

    logged = log_lines.text
    assert "unhandled error" in logged and "audit4_refuse" in logged and "audit4_one_code" in logged  # still useful
    for secret in (phone, phone[2:], other, other[2:], "someone@example.com", "$argon2id$"):
        assert secret not in logged, secret
    assert "Failing row contains" not in logged and "Key (phone)" not in logged
