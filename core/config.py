"""Configuration from the environment, with safe development defaults.

Every setting can be overridden by an environment variable of the same name (and by the mapping given to
``create_app`` in tests). ``WALLET_ENV=production`` refuses to start without the secrets that development
may default.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from limits import parse_many
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.money import MAX_AMOUNT

DEV_PEPPER = "development-pepper-not-a-secret"

# name: (default, parser, what it is) -- the README's configuration table is this table.
SETTINGS: dict[str, tuple[Any, type, str]] = {
    "WALLET_ENV": ("development", str, "development, test or production"),
    "DATABASE_URL": ("", str, "SQLAlchemy URL; empty = SQLite in instance/wallet.db (not in production)"),
    "PASSWORD_PEPPER": ("", str, "HMAC key applied before argon2; required in production"),
    "ARGON2_TIME_COST": (2, int, "argon2id iterations"),
    "ARGON2_MEMORY_KIB": (19456, int, "argon2id memory in KiB (19 MiB)"),
    "ARGON2_PARALLELISM": (1, int, "argon2id lanes"),
    "ACCESS_TOKEN_MINUTES": (15, int, "access token lifetime"),
    "REFRESH_TOKEN_DAYS": (30, int, "refresh token lifetime"),
    "PAYMENT_RESET_AFTER_PHONE_CHANGE_HOURS": (24, int, "no SMS reset of the payment password this long after a "
                                               "phone change (the old number was told)"),
    "SMS_RECOVERY_HOLD_HOURS": (24, int, "after a login-password recovery by SMS alone, no SMS reset of the payment "
                                "password, phone change, authenticator enrolment or real-name verification this long"),
    "EXPIRED_CREDENTIALS_KEEP_HOURS": (24, int, "expired tokens and SMS codes are deleted this long after expiry"),
    "SMS_CONSOLE_FILE": ("", str, "where the console sender appends messages; empty = instance/sms.jsonl"),
    "SMS_MAX_AGE_SECONDS": (86400, int, "an alert whose tries keep failing is given up this long after it was made"),
    "DISPATCH_INTERVAL_SECONDS": (0.5, float, "dispatcher poll interval"),
    "SMS_SEND_TIMEOUT_SECONDS": (10.0, float, "how long one hand-over to the SMS provider may take"),
    "SMS_LEASE_SECONDS": (60, int, "a claimed alert returns to the queue after this long without an outcome (more "
                          "than twice SMS_SEND_TIMEOUT_SECONDS)"),
    "SMS_BACKOFF_BASE_SECONDS": (2.0, float, "first retry delay; doubles per attempt, with jitter"),
    "SMS_BACKOFF_MAX_SECONDS": (600.0, float, "longest retry delay"),
    "SMS_BATCH_SIZE": (50, int, "alerts one dispatcher claims at a time"),
    "TWILIO_ACCOUNT_SID": ("", str, "Twilio account (AC...); set = send SMS through Twilio"),
    "TWILIO_AUTH_TOKEN": ("", str, "Twilio auth token: API auth (unless API keys) and callback signatures"),
    "TWILIO_API_KEY_SID": ("", str, "Twilio API key (SK...), instead of the auth token for the REST API"),
    "TWILIO_API_KEY_SECRET": ("", str, "secret of TWILIO_API_KEY_SID"),
    "TWILIO_FROM_NUMBER": ("", str, "sender number (E.164) or alphanumeric sender id"),
    "TWILIO_MESSAGING_SERVICE_SID": ("", str, "Messaging Service (MG...), instead of or with the From number"),
    "TWILIO_STATUS_CALLBACK_URL": ("", str, "public URL of POST /api/v1/notifications/twilio/status"),
    "TWILIO_API_BASE": ("", str, "replaces https://api.twilio.com (contract tests against a mock)"),
    "RATELIMIT_ENABLED": (True, bool, "rate limits on; false turns them off (tests, benchmarks; production warns)"),
    "RATELIMIT_STORAGE_URI": ("memory://", str, "limit counters: memory:// or redis://127.0.0.1:6379"),
    "RATELIMIT_KEY_PREFIX": ("wallet", str, "prefix of the limit counters' keys (share one Redis safely)"),
    "SMS_CODE_RESEND_LIMIT": ("1 per minute", str, "code sends per phone and purpose (the resend countdown)"),
    "SMS_CODE_LIMIT_PER_PHONE": ("5 per hour;10 per day", str, "code sends per phone, all purposes"),
    "SMS_CODE_LIMIT_PER_CLIENT": ("30 per hour", str, "code sends per client address (IPv6: per /64)"),
    "LOGIN_LIMIT_PER_PHONE": ("20 per hour", str, "login attempts, and password recoveries, per phone (each counted"
                              " on its own)"),
    "LOGIN_LIMIT_PER_CLIENT": ("200 per hour", str, "attempts per client address (IPv6: per /64) at login,"
                               " registration, refresh and password recovery (each counted on its own)"),
    "LIMIT_PER_TRANSACTION": (5_000_000, int, "largest single payment, withdrawal or top-up, in fen (50,000 yuan)"),
    "LIMIT_DAILY": (20_000_000, int, "most a user may send out per day, in fen (200,000 yuan)"),
    "LIMIT_PAYMENTS_PER_PAYEE_DAILY": (20, int, "payments to a phone number one user may make to one payee per day"
                                       " (each texts the payee)"),
    "WITHDRAWAL_RETRY_SECONDS": (5.0, float, "first delay before asking the bank again about a payout"),
    "WITHDRAWAL_MAX_AGE_SECONDS": (86400, int, "after this a payout the bank never received is failed back"),
    "BANK_LATENCY_SECONDS": (0.0, float, "simulated bank: seconds every call takes"),
    "BANK_RETRY_AFTER_SECONDS": (2, int, "Retry-After of a 503 bank_unavailable: seconds before the client retries"
                                 " with the same Idempotency-Key"),
    "LEDGER_CHECK_SECONDS": (600.0, float, "how often the worker re-checks every ledger invariant"),
    "ESCROW_SWEEP_SECONDS": (5.0, float, "how often `flask worker` (or `escrow sweep --loop`) applies deadlines"),
    "ESCROW_PAY_HOURS": (24, int, "an unpaid trade closes after this many hours"),
    "ESCROW_CONFIRM_DAYS": (10, int, "a shipped trade is confirmed automatically after this many days"),
    "ESCROW_REMIND_DAYS_BEFORE": (3, int, "the buyer is reminded this many days before auto-confirmation"),
    "ESCROW_EXTEND_DAYS": (5, int, "the buyer may push the confirm deadline back once by this many days"),
    "ESCROW_REFUND_RESPOND_DAYS_BEFORE_SHIPPING": (2, int, "seller silence on a refund before shipping = agreed"),
    "ESCROW_REFUND_RESPOND_DAYS_AFTER_SHIPPING": (5, int, "seller silence on a refund after shipping = agreed"),
    "ESCROW_RETURN_SHIP_DAYS": (7, int, "a buyer who does not send goods back within this loses the refund"),
    "ESCROW_RETURN_RECEIVE_DAYS": (10, int, "seller silence on returned goods = received"),
    "ESCROW_ESCALATE_DAYS": (7, int, "a refused refund not taken to the platform within this closes"),
    "ESCROW_RATE_DAYS": (15, int, "ratings are accepted this many days after a trade finishes"),
    "ESCROW_EVIDENCE_PER_PARTY": (50, int, "pieces of evidence each party may add to one trade"),
    "ESCROW_REFUND_REQUESTS_PER_TRADE": (3, int, "refund requests a buyer may make on one trade, however ended (before"
                                   " shipping, one more for everything still held)"),
    "ESCROW_MAX_UNSHIPPED_TRADES_PER_SELLER": (10, int, "paid trades a buyer may have waiting for one seller to"
                                               " ship (each payment texts the seller)"),
    "MAX_CONTENT_LENGTH": (65536, int, "largest accepted request body in bytes"),
    "IDEMPOTENCY_TTL_HOURS": (24, int, "how long Idempotency-Key answers are kept (at least 24)"),
    "PROXY_FIX_X_FOR": (0, int, "number of trusted proxies in front (for client addresses)"),
    "METRICS_TOKEN": ("", str, "bearer token the scraper sends for /metrics; empty = open, not served in production"),
    "LOG_LEVEL": ("INFO", str, "logging level"),
    "LOG_FORMAT": ("", str, "json (one object per line) or text; empty = json in production, text otherwise"),
}


WALLET_ENVS = ("development", "test", "production")
LOG_FORMATS = ("", "json", "text")
# The rate limiter's storages the application can use: the synchronous ones whose client it installs (``limits`` knows
# more: memcached, mongodb, valkey and async ones, which failed every worker's start with a traceback).
RATELIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+unix")
RATE_LIMITS = ("SMS_CODE_RESEND_LIMIT", "SMS_CODE_LIMIT_PER_PHONE", "SMS_CODE_LIMIT_PER_CLIENT",
               "LOGIN_LIMIT_PER_PHONE", "LOGIN_LIMIT_PER_CLIENT")
# Numbers are positive, except these, for which zero means something (none, no wait, at the deadline itself).
MAY_BE_ZERO = frozenset({"BANK_LATENCY_SECONDS", "PROXY_FIX_X_FOR", "EXPIRED_CREDENTIALS_KEEP_HOURS",
                         "ESCROW_REMIND_DAYS_BEFORE", "ESCROW_EXTEND_DAYS", "ESCROW_EVIDENCE_PER_PARTY",
                         "ESCROW_REFUND_REQUESTS_PER_TRADE"})
_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class ConfigError(click.ClickException, RuntimeError):
    """A setting has a value the application cannot run with. The message is one line that names the setting; the
    ``flask`` command line prints it as ``Error: ...`` and exits 1, and ``gunicorn.conf.py`` before gunicorn starts."""


def _parse(name: str, kind: type, raw: str) -> Any:
    if kind is bool:
        word = raw.strip().lower()
        if word not in _YES + _NO:
            raise ConfigError(f"{name}={raw!r} is neither true nor false (use true/false, yes/no, on/off, 1/0)")
        return word in _YES
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if kind is str:
        return value
    in_range = value >= 0 if name in MAY_BE_ZERO else value > 0
    if not (math.isfinite(value) and in_range):
        raise ConfigError(f"{name}={raw!r} must be {'zero or more' if name in MAY_BE_ZERO else 'more than zero'}")
    unit = _DURATION.search(name)
    if unit and value * _UNIT_SECONDS[unit.group(1)] > _LONGEST_SECONDS:
        # Found by an audit: a few zeros too many made every login a 500 (a token's expiry past any date).
        raise ConfigError(f"{name}={raw!r} is more than 100 years")
    return value


_DURATION = re.compile(r"_(SECONDS|MINUTES|HOURS|DAYS)(?:_|$)")
_UNIT_SECONDS = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600, "DAYS": 86400}
_LONGEST_SECONDS = 100 * 366 * 86400  # a duration setting's most: dates stay dates, and sleeps stay sleeps


def load(environ: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Settings from ``environ`` over the defaults, with derived values filled in; a value the application cannot
    use raises ``ConfigError``."""
    config = {name: _parse(name, kind, environ[name]) if name in environ else default
              for name, (default, kind, _doc) in SETTINGS.items()}
    _check_words(config)
    _check_limits(config)
    _check_twilio(config)
    return finish(config, instance_path)


# The least argon2id cost a production start takes (DESIGN 4.1: at least m=19 MiB, t=2, p=1).
ARGON2_FLOOR = {"ARGON2_MEMORY_KIB": 19456, "ARGON2_TIME_COST": 2, "ARGON2_PARALLELISM": 1}


# The most a spending limit can be: a single movement carries at most ``MAX_AMOUNT`` (``wallet.ledger``), and a day's
# usage is a signed 64-bit column that every payment compares with the limit (SQLite cannot bind a larger integer).
LIMIT_MAXIMA = {"LIMIT_PER_TRANSACTION": MAX_AMOUNT, "LIMIT_DAILY": 2**63 - 1}
# The most payments a day to one payee can be limited to: the day's count is a 32-bit column.
PAYMENTS_PER_PAYEE_MAX = 2**31 - 1
# The most alerts one dispatcher claims at a time: its claim binds it as a LIMIT, a signed 64-bit integer.
SMS_BATCH_MAX = 2**63 - 1


def _check_limits(config: dict[str, Any]) -> None:
    """Refuse a spending limit larger than the books can hold: a daily limit beyond 64 bits failed every payment on
    SQLite (500), a per-transaction limit beyond ``MAX_AMOUNT`` let a trade be opened that no payment could pay. And a
    batch size beyond 64 bits (found by the docs audit: every round of every dispatcher failed with a traceback binding
    the claim's LIMIT, and no alert was sent)."""
    for name, most in LIMIT_MAXIMA.items():
        if config[name] > most:
            raise ConfigError(f"{name}={config[name]} is more than the books hold: at most {most} fen")
    if config["LIMIT_PAYMENTS_PER_PAYEE_DAILY"] > PAYMENTS_PER_PAYEE_MAX:
        raise ConfigError(f"LIMIT_PAYMENTS_PER_PAYEE_DAILY={config['LIMIT_PAYMENTS_PER_PAYEE_DAILY']} is more than its"
                          f" counter holds: at most {PAYMENTS_PER_PAYEE_MAX}")
    if config["SMS_BATCH_SIZE"] > SMS_BATCH_MAX:
        raise ConfigError(f"SMS_BATCH_SIZE={config['SMS_BATCH_SIZE']} is more than a claim can bind: at most"
                          f" {SMS_BATCH_MAX}")


def _check_words(config: dict[str, Any]) -> None:
    """Refuse a setting that is one of a few words, or a limit string, the application would misread: an unknown
    ``WALLET_ENV`` ran as development (development pepper, open /metrics), a limit flask-limiter cannot parse was
    switched off."""
    if config["WALLET_ENV"] not in WALLET_ENVS:
        raise ConfigError(f"WALLET_ENV={config['WALLET_ENV']!r} is not one of {', '.join(WALLET_ENVS)}")
    if config["LOG_FORMAT"] not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={config['LOG_FORMAT']!r} is not json or text (or empty)")
    config["LOG_LEVEL"] = config["LOG_LEVEL"].strip().upper()
    if config["LOG_LEVEL"] not in logging.getLevelNamesMapping():
        raise ConfigError(f"LOG_LEVEL={config['LOG_LEVEL']!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL")
    for name in RATE_LIMITS:
        try:
            limits = parse_many(config[name])
        except ValueError:
            raise ConfigError(f"{name}={config[name]!r} is not a rate limit like '5 per hour;10 per day'") from None
        if any(limit.amount < 1 for limit in limits):  # found by an audit: every request it guards was a 429
            raise ConfigError(f"{name}={config[name]!r} allows nothing: each limit must be more than zero")
    config["METRICS_TOKEN"] = config["METRICS_TOKEN"].strip()  # a token read from a file keeps its line break
    scheme = config["RATELIMIT_STORAGE_URI"].partition("://")[0]
    if scheme not in RATELIMIT_SCHEMES:
        # the scheme only: the rest of the URI may hold a password
        raise ConfigError(f"RATELIMIT_STORAGE_URI: {scheme!r}:// is not memory:// or redis://...")
    try:
        urlsplit(config["RATELIMIT_STORAGE_URI"]).port  # noqa: B018 - the redis client's parser raised it, later
    except ValueError:  # found by an audit: a traceback from create_app
        raise ConfigError("RATELIMIT_STORAGE_URI: its port is not a number from 0 to 65535 (or its host is not"
                          " one)") from None
    # argon2's own bounds: outside them every hash (a registration, a password change) failed with a 500 (found by an
    # audit: HashingError "Memory cost is too small", or OverflowError for a number wider than 32 bits).
    for name, most in (("ARGON2_TIME_COST", 2**32 - 1), ("ARGON2_PARALLELISM", 2**24 - 1),
                       ("ARGON2_MEMORY_KIB", 2**32 - 1)):
        if config[name] > most:
            raise ConfigError(f"{name}={config[name]} is more than argon2 takes ({most})")
    if config["ARGON2_MEMORY_KIB"] < 8 * config["ARGON2_PARALLELISM"]:
        raise ConfigError(f"ARGON2_MEMORY_KIB={config['ARGON2_MEMORY_KIB']} must be at least 8 per lane "
                          f"(ARGON2_PARALLELISM={config['ARGON2_PARALLELISM']}): argon2 refuses less")
    if config["SMS_LEASE_SECONDS"] <= 2 * config["SMS_SEND_TIMEOUT_SECONDS"]:
        # A lease that can run out during a hand-over gives the alert to another dispatcher, which sends it again.
        raise ConfigError(f"SMS_LEASE_SECONDS={config['SMS_LEASE_SECONDS']} must be more than twice "
                          f"SMS_SEND_TIMEOUT_SECONDS={config['SMS_SEND_TIMEOUT_SECONDS']}")
    if config["ESCROW_REMIND_DAYS_BEFORE"] >= config["ESCROW_CONFIRM_DAYS"]:
        # The reminder would fall due as the goods are shipped, and the buyer never be reminded near the deadline.
        raise ConfigError(f"ESCROW_REMIND_DAYS_BEFORE={config['ESCROW_REMIND_DAYS_BEFORE']} must be less than "
                          f"ESCROW_CONFIRM_DAYS={config['ESCROW_CONFIRM_DAYS']}")


def _is_web_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


_TWILIO_SHAPES = (
    ("TWILIO_ACCOUNT_SID", re.compile(r"AC[0-9a-fA-F]{32}"), "an Account SID (AC and 32 hexadecimal digits)"),
    ("TWILIO_API_KEY_SID", re.compile(r"SK[0-9a-fA-F]{32}"), "an API key SID (SK and 32 hexadecimal digits)"),
    ("TWILIO_MESSAGING_SERVICE_SID", re.compile(r"MG[0-9a-fA-F]{32}"),
     "a Messaging Service SID (MG and 32 hexadecimal digits)"),
    # Twilio's rules: a short code is its digits; an alphanumeric sender id takes + - _ & too, and needs a letter.
    ("TWILIO_FROM_NUMBER",
     re.compile(r"\+[1-9][0-9]{1,14}|[0-9]{3,8}|(?=[A-Za-z0-9 +_&-]*[A-Za-z])[A-Za-z0-9 +_&-]{1,11}"),
     "a number in E.164 (+12025550100), a short code nor an alphanumeric sender id (up to 11 letters, digits, spaces"
     " or + - _ &)"),
)


def _check_twilio(config: dict[str, Any]) -> None:
    """Refuse a Twilio configuration the sender could not use (``notifications.sms.sender_from_config`` raised it
    from ``create_app``: a traceback from every ``flask`` command, and every gunicorn worker failing to boot, found by
    an audit), and a URL that is none (accepted before: every hand-over failed, and every alert was given up at
    SMS_MAX_AGE_SECONDS). The URLs' text is left out: it may hold credentials."""
    for name in ("TWILIO_STATUS_CALLBACK_URL", "TWILIO_API_BASE"):
        if config[name] and not _is_web_url(config[name]):
            raise ConfigError(f"{name} is not an http:// or https:// URL with a host")
    if not config["TWILIO_ACCOUNT_SID"]:
        return  # the console sender; a token and a public URL still check delivery reports' signatures
    # Twilio answers every message 4xx for a SID or a From it cannot read, which is retried until the alert is given
    # up: no alert reached anyone (found by an audit). The values are left out: a pasted secret may be among them.
    for name, shape, what in _TWILIO_SHAPES:
        if config[name] and not shape.fullmatch(config[name]):
            raise ConfigError(f"{name} is not {what}")
    if bool(config["TWILIO_API_KEY_SID"]) != bool(config["TWILIO_API_KEY_SECRET"]):
        raise ConfigError("TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET must be set together")
    if not (config["TWILIO_AUTH_TOKEN"] or config["TWILIO_API_KEY_SID"]):
        raise ConfigError("TWILIO_ACCOUNT_SID needs TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and "
                          "TWILIO_API_KEY_SECRET) to send SMS")
    if not (config["TWILIO_FROM_NUMBER"] or config["TWILIO_MESSAGING_SERVICE_SID"]):
        raise ConfigError("TWILIO_ACCOUNT_SID needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID to send SMS")
    if config["TWILIO_STATUS_CALLBACK_URL"] and not config["TWILIO_AUTH_TOKEN"]:
        raise ConfigError("TWILIO_STATUS_CALLBACK_URL needs TWILIO_AUTH_TOKEN, which signs the delivery reports "
                          "(without it every report would be refused)")


def finish(config: dict[str, Any], instance_path: str) -> dict[str, Any]:
    """Fill derived settings and refuse unsafe production configuration."""
    instance = Path(instance_path)
    url = config["DATABASE_URL"] or f"sqlite:///{instance / 'wallet.db'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        parsed = make_url(url)
        # The drivers installed (and that core.db speaks to): another one failed create_app with ModuleNotFoundError.
        backend = f"{parsed.get_backend_name()}+{parsed.get_driver_name()}"
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number (found by an audit: a traceback)
        backend = ""
    backend = {"postgresql+psycopg": "postgresql", "sqlite+pysqlite": "sqlite"}.get(backend, "")
    if backend not in ("postgresql", "sqlite"):  # the URL's text is left out: it may hold a password
        raise ConfigError("DATABASE_URL is not a PostgreSQL URL (postgresql://user@host:5432/database), nor empty")
    if backend != "postgresql" and config["WALLET_ENV"] == "production":
        # DESIGN 8: production is PostgreSQL. Several gunicorn workers, dispatchers and sweepers on one SQLite file
        # queue behind its single writer, and the concurrency the product is tested for is PostgreSQL's.
        raise ConfigError("DATABASE_URL must name PostgreSQL when WALLET_ENV=production (SQLite is for development)")
    config["SQLALCHEMY_DATABASE_URI"] = url
    config["SQLALCHEMY_ENGINE_OPTIONS"] = (
        {"connect_args": {"timeout": 10, "check_same_thread": False}}
        if url.startswith("sqlite")
        else {"pool_size": 10, "max_overflow": 20}  # no pre-ping: core.db retries a connection lost before COMMIT
    )
    # A database error's text leaves out the statement's values (codes in alert bodies, phones, hashes): it is logged
    # with the traceback of the 500 it causes.
    config["SQLALCHEMY_ENGINE_OPTIONS"]["hide_parameters"] = True
    config["SMS_CONSOLE_FILE"] = config["SMS_CONSOLE_FILE"] or str(instance / "sms.jsonl")
    if Path(config["SMS_CONSOLE_FILE"]).is_dir():  # every hand-over failed with IsADirectoryError (found by an audit)
        raise ConfigError(f"SMS_CONSOLE_FILE={config['SMS_CONSOLE_FILE']!r} is a directory, not a file to append to")
    if not config["PASSWORD_PEPPER"]:
        if config["WALLET_ENV"] == "production":
            raise ConfigError("PASSWORD_PEPPER must be set when WALLET_ENV=production")
        config["PASSWORD_PEPPER"] = DEV_PEPPER
    if config["WALLET_ENV"] == "production" and config["PASSWORD_PEPPER"] == DEV_PEPPER:
        raise ConfigError("PASSWORD_PEPPER must not be the development default in production")
    if config["WALLET_ENV"] == "production":
        # DESIGN 4.1: argon2id at least m=19 MiB, t=2, p=1 (OWASP's minimum). Below it a production start hashed
        # every password thousands of times cheaper to guess, silently (found by the design audit); development and
        # tests may hash cheaply.
        for name, least in ARGON2_FLOOR.items():
            if config[name] < least:
                raise ConfigError(f"{name}={config[name]} is below the least DESIGN allows in production ({least})")
    if config["IDEMPOTENCY_TTL_HOURS"] < 24:  # DESIGN 7: a retry the next morning must replay, not pay again
        raise ConfigError("IDEMPOTENCY_TTL_HOURS must be at least 24: Idempotency-Key answers are kept a day")
    config["RATELIMIT_HEADERS_ENABLED"] = True
    config["LOG_FORMAT"] = log_format(config["LOG_FORMAT"], config["WALLET_ENV"])
    return config


def log_format(chosen: str, wallet_env: str) -> str:
    """``LOG_FORMAT`` as set, or by default JSON lines in production and text for people elsewhere."""
    return chosen or ("json" if wallet_env == "production" else "text")
