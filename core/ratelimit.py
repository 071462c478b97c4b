"""The rate limiter (flask-limiter). Memory counters by default; Redis when ``RATELIMIT_STORAGE_URI`` says so."""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, default_limits=[])


def configured(name: str) -> Callable[[], str]:
    """A limit string read from configuration at request time (so tests and operators can change it)."""
    return lambda: current_app.config[name]
