"""Where a read endpoint's time goes, in-process on PostgreSQL (no gunicorn, no network client).

Sets up two verified users with a top-up, 25 transfers and a trade through the API (Flask test client), then
times each read endpoint next to a bare Flask JSON endpoint in the same process, and profiles one of them
with cProfile. ``bench/http.py`` gives the rates through gunicorn; this says what a request is made of.

    .venv/bin/python bench/profile_read.py                       # timings only
    .venv/bin/python bench/profile_read.py --profile statement   # + cProfile, sorted by cumulative time
    .venv/bin/python bench/profile_read.py --profile wallet --sort tottime

It drops and recreates the database ``bench_profile``.
"""

# ruff: noqa: E402 - the imports below need the repository root on sys.path first
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The repository root first, and never this folder: bench/http.py would shadow the standard library's http.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from flask import Flask, jsonify
from flask_migrate import upgrade

from app import create_app
from bench.measure import fresh_database
from tests.conftest import Api, Inbox

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_profile"


def bare_app() -> Flask:
    """The reference: a bare Flask JSON endpoint, ``GET /json``."""
    bare = Flask("bare")
    bare.get("/json")(lambda: jsonify(available=100, pending=0, currency="CNY"))
    return bare


def a_reader(app: Flask) -> tuple[dict[str, Any], dict[str, str]]:
    """A verified user with a top-up, 25 transfers to another and a trade with them, made through the API of ``app``
    (migrated, empty); the user (with ``headers``) and the paths of the read endpoints, by name."""
    client = app.test_client()
    api = Api(client, Inbox(app))
    alice, bob = api.verified(), api.verified()
    api.money("/api/v1/topups", alice, amount=100_000, bank_card_id=alice["card_id"])
    for _ in range(25):
        api.money("/api/v1/transfers", alice, to_phone=bob["phone"], amount=1)
    trade = client.post("/api/v1/trades", headers=alice["headers"],
                        json={"seller_phone": bob["phone"], "title": "bench", "amount": 100}).json
    return alice, {"wallet": "/api/v1/wallet", "statement": "/api/v1/wallet/transactions?limit=20",
                   "trade": f"/api/v1/trades/{trade['id']}"}


def per_request(call: Callable[[], object], count: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per call, after a warm-up."""
    for _ in range(200):
        call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        call()
    return (time.perf_counter() - wall) / count * 1000, (time.process_time() - cpu) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", choices=["wallet", "statement", "trade", "healthz"])
    parser.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"])
    args = parser.parse_args()

    fresh_database(args.database_url)
    app = create_app({"DATABASE_URL": args.database_url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False,
                      "SMS_CONSOLE_FILE": str(Path(tempfile.mkdtemp()) / "sms.jsonl"), "LOG_LEVEL": "WARNING",
                      "LIMIT_PAYMENTS_PER_PAYEE_DAILY": 100})
    with app.app_context():
        upgrade()
    client = app.test_client()
    alice, paths = a_reader(app)
    paths["healthz"] = "/healthz"
    bare_client = bare_app().test_client()

    print(f"{'endpoint':<12} {'wall ms':>8} {'cpu ms':>8}   ({args.requests} requests each, in-process)")
    wall, cpu = per_request(lambda: bare_client.get("/json"), args.requests)
    print(f"{'bare':<12} {wall:>8.3f} {cpu:>8.3f}")
    for name, path in paths.items():
        assert client.get(path, headers=alice["headers"]).status_code == 200, path
        wall, cpu = per_request(lambda path=path: client.get(path, headers=alice["headers"]), args.requests)
        print(f"{name:<12} {wall:>8.3f} {cpu:>8.3f}")

    if args.profile:
        path = paths[args.profile]
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            client.get(path, headers=alice["headers"])
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(45)
        print(out.getvalue())


if __name__ == "__main__":
    main()
