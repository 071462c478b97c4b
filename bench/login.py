"""Logins per second through the service layer vs raw argon2 verifies per second, on this machine, now.

A login (``security.accounts.log_in`` for a registered user on a trusted device) costs one argon2id verify
plus database work: read the user, read and write the lock state, read the device, open a session and
mint two tokens. argon2 is meant to dominate, so the ratio of the two rates says how much the rest costs;
the target is >= 0.85.

The two measurements alternate in rounds (raw, service, raw, service, ...) so a machine that slows down
or speeds up during the run affects both alike. Parameters are the app's ``ARGON2_*`` settings (the
environment overrides them for both sides).

    .venv/bin/python bench/login.py                       # temporary SQLite database
    .venv/bin/python bench/login.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python bench/login.py --profile             # also: where a service login spends its time

A PostgreSQL database is migrated to the newest revision and the benchmark user is created once and
reused; point it at a database of its own.
"""

# ruff: noqa: E402 - the imports below need the repository root on sys.path first
from __future__ import annotations

import argparse
import cProfile
import hashlib
import hmac
import io
import json
import os
import platform
import pstats
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository root first, and never this folder: bench/http.py would shadow the standard library's http.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from argon2 import PasswordHasher, Type
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import select

from app import create_app
from core.db import db
from notifications import dispatcher
from security import accounts, codes
from security.models import User

PHONE = "+12025550142"  # NANP 555-01XX: reserved for fiction, never a real person's number
LOGIN_PASSWORD = "bench correct horse battery"
PAYMENT_PASSWORD = "135790"
DEVICE = "bench-device"
TARGET = 0.85


@dataclass
class Series:
    name: str
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # (operations, wall s, CPU s) per round

    @property
    def operations(self) -> int:
        return sum(n for n, _, _ in self.samples)

    @property
    def seconds(self) -> float:
        return sum(s for _, s, _ in self.samples)

    @property
    def cpu_ms_per_op(self) -> float:
        """This thread's CPU time per operation: what the work costs, whatever else the machine is doing."""
        return 1000 * sum(c for _, _, c in self.samples) / self.operations

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def round_rates(self) -> list[float]:
        return [n / s for n, s, _ in self.samples]


def measure(operation: Callable[[], object], seconds: float) -> tuple[int, float, float]:
    """Run ``operation`` for about ``seconds``; returns (count, wall seconds, this thread's CPU seconds)."""
    count, start, cpu_start = 0, time.perf_counter(), time.thread_time()
    deadline = start + seconds
    while True:
        operation()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start, time.thread_time() - cpu_start


def build_app(database_url: str, workdir: Path) -> Flask:
    app = create_app({
        "DATABASE_URL": database_url,
        "RATELIMIT_ENABLED": False,
        "SMS_CONSOLE_FILE": str(workdir / "sms.jsonl"),
        "LOG_LEVEL": "WARNING",
    })
    with app.app_context():
        upgrade(revision="heads")
    return app


def ensure_user(app: Flask) -> None:
    """Register the benchmark user through the services (SMS code and all), unless it already exists."""
    with app.app_context():
        if db.session.scalars(select(User).where(User.phone == PHONE)).first() is not None:
            return
        codes.request_code(PHONE, "register", "en")
        dispatcher.dispatch_all(app.extensions["sms_sender"])
        lines = Path(app.config["SMS_CONSOLE_FILE"]).read_text(encoding="utf-8").splitlines()
        body = next(m["body"] for m in map(json.loads, reversed(lines)) if m["to"] == PHONE)
        code = re.search(r"(?<!\d)\d{6}(?!\d)", body).group()
        accounts.register(PHONE, code, LOGIN_PASSWORD, PAYMENT_PASSWORD, DEVICE, None, "en", "bench")


def service_login(app: Flask) -> Callable[[], object]:
    def login() -> object:
        # One application context per login, as one request would have: a fresh database session each time.
        with app.app_context():
            return accounts.log_in(PHONE, LOGIN_PASSWORD, DEVICE, None, None)

    return login


def http_login(app: Flask) -> Callable[[], object]:
    client = app.test_client()
    body = {"phone": PHONE, "login_password": LOGIN_PASSWORD, "device_id": DEVICE}

    def login() -> object:
        response = client.post("/api/v1/sessions", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST /api/v1/sessions answered {response.status_code}: {response.json}")
        return response

    return login


def raw_verify(app: Flask) -> Callable[[], object]:
    cfg = app.config
    hasher = PasswordHasher(time_cost=cfg["ARGON2_TIME_COST"], memory_cost=cfg["ARGON2_MEMORY_KIB"],
                            parallelism=cfg["ARGON2_PARALLELISM"], type=Type.ID)
    # The same input shape the app hashes: the hex HMAC of the password under the pepper.
    secret = hmac.new(b"bench-pepper", LOGIN_PASSWORD.encode(), hashlib.sha256).hexdigest().encode()
    stored = hasher.hash(secret)
    return lambda: hasher.verify(stored, secret)


def profile_service(login: Callable[[], object], count: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        login()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative")
    stats.print_stats(25)
    out.write("\n--- by own time ---\n")
    stats.sort_stats("tottime").print_stats(15)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each measurement")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round of one measurement")
    parser.add_argument("--http", action="store_true", help="also time POST /api/v1/sessions (Flask test client)")
    parser.add_argument("--profile", action="store_true", help="profile service logins with cProfile")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when the ratio is below {TARGET}")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite:///{workdir / 'wallet.db'}"
        app = build_app(url, workdir)
        ensure_user(app)
        cfg = app.config
        candidates = {"raw argon2 verify": raw_verify(app), "service log_in": service_login(app)}
        if args.http:
            candidates["HTTP POST /sessions"] = http_login(app)
        series = {name: Series(name) for name in candidates}

        for operation in candidates.values():  # warm up: imports, caches, connection pool, page cache
            measure(operation, 0.3)
        for _ in range(args.rounds):
            for name, operation in candidates.items():
                series[name].samples.append(measure(operation, args.seconds))

        raw, service = series["raw argon2 verify"], series["service log_in"]
        ratio = service.rate / raw.rate
        round_ratios = [s / r for s, r in zip(service.round_rates(), raw.round_rates(), strict=True)]

        engine = url.split(":", 1)[0]
        print(f"bench/login.py  {platform.python_implementation()} {platform.python_version()}  "
              f"{os.cpu_count()} CPUs  load {os.getloadavg()[0]:.2f}  database {engine}")
        print(f"argon2id t={cfg['ARGON2_TIME_COST']} m={cfg['ARGON2_MEMORY_KIB']} KiB "
              f"p={cfg['ARGON2_PARALLELISM']}  {args.rounds} rounds x {args.seconds:g} s each, alternating")
        print()
        print(f"{'operation':<22} {'count':>6} {'seconds':>8} {'ms/op':>7} {'cpu ms/op':>9} {'ops/s':>7} "
              f"{'rounds min..max':>16}")
        for s in series.values():
            rates = s.round_rates()
            print(f"{s.name:<22} {s.operations:>6} {s.seconds:>8.2f} {1000 / s.rate:>7.2f} {s.cpu_ms_per_op:>9.2f} "
                  f"{s.rate:>7.1f} {min(rates):>7.1f}..{max(rates):<7.1f}")
        print()
        print(f"overhead per login: {1000 / service.rate - 1000 / raw.rate:.2f} ms wall, "
              f"{service.cpu_ms_per_op - raw.cpu_ms_per_op:.2f} ms CPU beyond the argon2 verify")
        print(f"ratio service/raw (CPU time): {raw.cpu_ms_per_op / service.cpu_ms_per_op:.3f}")
        print(f"ratio service/raw: {ratio:.3f}  (median of rounds {statistics.median(round_ratios):.3f}; "
              f"target >= {TARGET})  {'OK' if ratio >= TARGET else 'BELOW TARGET'}")

        if args.profile:
            print()
            print(profile_service(candidates["service log_in"], max(20, int(service.rate * args.seconds))))
        with app.app_context():
            db.engine.dispose()
    return 1 if args.check and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
