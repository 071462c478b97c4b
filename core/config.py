"""Configuration from the environment, with safe development defaults.

Every setting can be overridden by an environment variable of the same name (and by the mapping given to
``create_app`` in tests). ``WALLET_ENV=production`` refuses to start without the secrets that development
may default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEV_PEPPER = "development-pepper-not-a-secret"

# name: (default, parser, what it is) -- the README's configuration table is this table.
SETTINGS: dict[str, tuple[Any, type, str]] = {
    "WALLET_ENV": ("development", str, "development, test or production"),
    "DATABASE_URL": ("", str, "SQLAlchemy URL; empty = SQLite in instance/wallet.db"),
    "PASSWORD_PEPPER": ("", str, "HMAC key applied before argon2; required in production"),
    "ARGON2_TIME_COST": (2, int, "argon2id iterations"),
    "ARGON2_MEMORY_KIB": (19456, int, "argon2id memory in KiB (19 MiB)"),
    "ARGON2_PARALLELISM": (1, int, "argon2id lanes"),
    "ACCESS_TOKEN_MINUTES": (15, int, "access token lifetime"),
    "REFRESH_TOKEN_DAYS": (30, int, "refresh token lifetime"),
    "SMS_CONSOLE_FILE": ("", str, "where the console sender appends messages; empty = instance/sms.jsonl"),
    "SMS_MAX_AGE_SECONDS": (86400, int, "an alert still unsent after this long is failed"),
    "DISPATCH_INTERVAL_SECONDS": (0.5, float, "dispatcher poll interval"),
    "RATELIMIT_ENABLED": (True, bool, "turn rate limits off (tests only)"),
    "RATELIMIT_STORAGE_URI": ("memory://", str, "limit counters: memory:// or redis://127.0.0.1:6379"),
    "RATELIMIT_KEY_PREFIX": ("wallet", str, "prefix of the limit counters' keys (share one Redis safely)"),
    "SMS_CODE_RESEND_LIMIT": ("1 per minute", str, "code sends per phone and purpose (the resend countdown)"),
    "SMS_CODE_LIMIT_PER_PHONE": ("5 per hour;10 per day", str, "code sends per phone, all purposes"),
    "SMS_CODE_LIMIT_PER_CLIENT": ("30 per hour", str, "code sends per client address"),
    "LOGIN_LIMIT_PER_PHONE": ("20 per hour", str, "login attempts per phone"),
    "LOGIN_LIMIT_PER_CLIENT": ("200 per hour", str, "login attempts per client address"),
    "MAX_CONTENT_LENGTH": (65536, int, "largest accepted request body in bytes"),
    "IDEMPOTENCY_TTL_HOURS": (24, int, "how long Idempotency-Key answers are kept"),
    "PROXY_FIX_X_FOR": (0, int, "number of trusted proxies in front (for client addresses)"),
    "LOG_LEVEL": ("INFO", str, "logging level"),
}


def _parse(kind: type, raw: str) -> Any:
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return kind(raw)


def load(environ: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Settings from ``environ`` over the defaults, with derived values filled in."""
    config = {name: _parse(kind, environ[name]) if name in environ else default
              for name, (default, kind, _doc) in SETTINGS.items()}
    return finish(config, instance_path)


def finish(config: dict[str, Any], instance_path: str) -> dict[str, Any]:
    """Fill derived settings and refuse unsafe production configuration."""
    instance = Path(instance_path)
    url = config["DATABASE_URL"] or f"sqlite:///{instance / 'wallet.db'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    config["SQLALCHEMY_DATABASE_URI"] = url
    config["SQLALCHEMY_ENGINE_OPTIONS"] = (
        {"connect_args": {"timeout": 10, "check_same_thread": False}}
        if url.startswith("sqlite")
        else {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
    )
    config["SMS_CONSOLE_FILE"] = config["SMS_CONSOLE_FILE"] or str(instance / "sms.jsonl")
    if not config["PASSWORD_PEPPER"]:
        if config["WALLET_ENV"] == "production":
            raise RuntimeError("PASSWORD_PEPPER must be set when WALLET_ENV=production")
        config["PASSWORD_PEPPER"] = DEV_PEPPER
    if config["WALLET_ENV"] == "production" and config["PASSWORD_PEPPER"] == DEV_PEPPER:
        raise RuntimeError("PASSWORD_PEPPER must not be the development default in production")
    config["RATELIMIT_HEADERS_ENABLED"] = True
    return config
