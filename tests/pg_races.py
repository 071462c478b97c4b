"""What the PostgreSQL race tests share (``test_recovery_hold_races``, ``test_takeover_races``,
``test_money_races_audit``, ``test_freeze_races``, ``test_dispute_races_audit``): the skip on SQLite, which runs one
write transaction at a time, and a response as the pair a race's outcome is told by.

``postgres_only`` is an autouse fixture: a test module takes it by importing it (``# noqa: F401``, as pytest finds
fixtures by name in the module)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def postgres_only(app):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL): SQLite runs one writer at a time anyway")


def answer(response):
    """A response as (status code, JSON body)."""
    return response.status_code, response.get_json()
