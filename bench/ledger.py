"""Ledger benchmarks on PostgreSQL (never run as timed tests).

Throughput (default): transfers per second through ``wallet.ledger.transfer`` at 1 and 8 concurrent workers,
each worker a separate *process* (Python threads would share one GIL, so 8 threads would measure the
interpreter lock rather than the database), next to ``pgbench``'s default TPC-B-like script at scale 10 with
the same client counts, in the same run, printed as ratios.

    .venv/bin/python bench/ledger.py                      # one-statement transfers vs pgbench, c=1 and c=8
    .venv/bin/python bench/ledger.py --path portable      # the multi-statement path (SQLite's) on PostgreSQL
    .venv/bin/python bench/ledger.py --full               # + idempotency key and two outbox alerts per transfer
    .venv/bin/python bench/ledger.py --scale              # p50 latency with 10k and with 1M existing transfers
    .venv/bin/python bench/ledger.py --profile            # cProfile of one worker

It drops and recreates the databases ``bench_ledger`` and ``bench_pgbench`` on ``--server``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import pstats
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from app import create_app
from core import idempotency
from core.db import db, run_in_transaction
from notifications.outbox import enqueue
from wallet import check, ledger
from wallet.errors import InsufficientFunds
from wallet.models import BANK_CLEARING

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
FUNDING = 10**10  # per wallet: enough that no benchmark transfer is refused


def _recreate(server: str, name: str) -> None:
    engine = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def _app(url: str) -> Any:
    return create_app({"DATABASE_URL": url, "WALLET_ENV": "test", "LOG_LEVEL": "WARNING"})


def setup_ledger(url: str, server: str, wallets: int) -> list[str]:
    """A fresh migrated database with ``wallets`` funded wallets; returns their ledger account ids."""
    _recreate(server, url.rsplit("/", 1)[1])
    app = _app(url)
    with app.app_context():
        upgrade(revision="heads")
        ids = [ledger.open_wallet(f"usr_bench_{n:06d}") for n in range(wallets)]
        for n, wallet in enumerate(ids):
            bank = ledger.system_account(BANK_CLEARING, "ICBC", shard=n % ledger.SHARDS[BANK_CLEARING])
            ledger.transfer(bank, wallet, FUNDING, kind=ledger.TOPUP)
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        db.engine.dispose()
    return ids


def _one_transfer(rng: random.Random, wallets: list[str], full: bool, seq: int) -> None:
    debit, credit = rng.sample(wallets, 2)
    amount = rng.randint(1, 10_000)
    if not full:
        ledger.transfer(debit, credit, amount, kind=ledger.PAYMENT)
        return

    # What POST /api/v1/transfers does in its transaction besides HTTP and the password check.
    def effect() -> tuple[int, dict[str, Any]]:
        posted = ledger.transfer(debit, credit, amount, kind=ledger.PAYMENT)
        enqueue("+12025550100", "balance_payment", locale="en", amount=amount, payee="+12025550101",
                time=posted.created_at)
        enqueue("+12025550101", "transfer_received", locale="en", amount=amount, payer="+12025550100",
                time=posted.created_at)
        return 201, {"id": posted.id, "amount": amount}

    key = f"bench-{rng.getrandbits(64):x}-{seq}"
    idempotency.run_idempotent("transfers:" + debit, key, idempotency.fingerprint("POST", "/t", {"k": key}), effect)


def _worker(url: str, wallets: list[str], seconds: float, path: str, full: bool, barrier: Any, results: Any) -> None:
    ledger.single_statement_transfers = path == "one"
    app = _app(url)
    rng = random.Random()
    with app.app_context():
        for n in range(50):  # warm up: connect, let psycopg prepare the statements
            _one_transfer(rng, wallets, full, -n)
        barrier.wait()
        done = refused = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            try:
                _one_transfer(rng, wallets, full, done)
                done += 1
            except InsufficientFunds:
                refused += 1
        db.engine.dispose()
    results.put((done, refused))


def ledger_tps(url: str, wallets: list[str], clients: int, seconds: float, path: str, full: bool) -> float:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, wallets, seconds, path, full, barrier, results))
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    counts = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    if any(refused for _, refused in counts):
        raise SystemExit(f"transfers were refused: {counts}")
    return sum(done for done, _ in counts) / seconds


def setup_pgbench(server: str, database: str) -> None:
    _recreate(server, database)
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-i", "-s", "10", "-q", database],
                   check=True, capture_output=True)


def pgbench_tps(database: str, clients: int, seconds: float) -> float:
    out = subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-c", str(clients), "-j", str(clients),
         "-T", str(int(seconds)), database],
        check=True, capture_output=True, text=True,
    ).stdout
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    assert match, out
    return float(match.group(1))


def throughput(args: argparse.Namespace) -> None:
    url = f"{args.server}/bench_ledger"
    wallets = setup_ledger(url, args.server, args.wallets)
    setup_pgbench(args.server, "bench_pgbench")
    label = f"ledger.transfer ({args.path}{', +idempotency +outbox' if args.full else ''})"
    print(f"{args.seconds:.0f} s per run, {args.wallets} wallets, pgbench TPC-B-like scale 10")
    print(f"{'clients':>7}  {label:>48}  {'pgbench tps':>11}  {'ratio':>5}")
    for clients in args.clients:
        ours = ledger_tps(url, wallets, clients, args.seconds, args.path, args.full)
        theirs = pgbench_tps("bench_pgbench", clients, args.seconds)
        print(f"{clients:>7}  {ours:>48.0f}  {theirs:>11.0f}  {ours / theirs:>5.2f}", flush=True)
    app = _app(url)
    with app.app_context():
        problems = check.check_invariants()
        print("invariants:", "clean" if not problems else problems[:5], check.counts())
        db.engine.dispose()


# --- scale: latency with 10k and 1M existing transfers ---------------------------------------------------------

_BULK = [
    "SET session_replication_role = replica",  # rows are consistent by construction; skip FK/guard triggers
    "CREATE TEMP TABLE bw AS SELECT row_number() OVER (ORDER BY id) - 1 AS ord, id FROM ledger_accounts"
    " WHERE kind = 'wallet'",
    "CREATE TEMP TABLE bb AS SELECT row_number() OVER (ORDER BY id) - 1 AS ord, id FROM ledger_accounts"
    " WHERE kind = 'bank_clearing'",
    "CREATE TEMP TABLE bulk AS SELECT g, 'tfbulk_' || lpad(g::text, 12, '0') AS id, bb.id AS debit,"
    " bw.id AS credit, (1 + g % 1000)::bigint AS amount FROM generate_series(:start, :stop - 1) AS g"
    " JOIN bw ON bw.ord = g % (SELECT count(*) FROM bw) JOIN bb ON bb.ord = g % (SELECT count(*) FROM bb)",
    "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, created_at)"
    " SELECT id, debit, credit, amount, 'CNY', 'topup', now() AT TIME ZONE 'UTC' FROM bulk ORDER BY g",
    # balance_after continues from each account's current balance, in entry id order.
    "INSERT INTO ledger_entries (account_id, transfer_id, counterparty_account_id, kind, amount, balance_after,"
    " created_at) SELECT s.account_id, s.transfer_id, s.counterparty, 'topup', s.amount,"
    " a.credits_posted - a.debits_posted + SUM(s.amount) OVER (PARTITION BY s.account_id ORDER BY s.g, s.side"
    " ROWS UNBOUNDED PRECEDING), now() AT TIME ZONE 'UTC' FROM ("
    " SELECT g, 0 AS side, debit AS account_id, id AS transfer_id, credit AS counterparty, -amount AS amount FROM bulk"
    " UNION ALL SELECT g, 1, credit, id, debit, amount FROM bulk) AS s"
    " JOIN ledger_accounts AS a ON a.id = s.account_id ORDER BY s.g, s.side",
    "UPDATE ledger_accounts AS a SET debits_posted = a.debits_posted + x.debits,"
    " credits_posted = a.credits_posted + x.credits FROM ("
    " SELECT account_id, sum(debits) AS debits, sum(credits) AS credits FROM ("
    " SELECT debit AS account_id, amount AS debits, 0 AS credits FROM bulk"
    " UNION ALL SELECT credit, 0, amount FROM bulk) AS s GROUP BY account_id) AS x WHERE a.id = x.account_id",
    "DROP TABLE bw, bb, bulk",
    "SET session_replication_role = origin",
]


def bulk_load(url: str, start: int, stop: int) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in _BULK:
            conn.execute(text(statement), {"start": start, "stop": stop})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def latencies(url: str, wallets: list[str], samples: int) -> tuple[list[float], list[float]]:
    """Milliseconds per transfer and per statement page (20 newest entries of a wallet)."""
    app = _app(url)
    rng = random.Random(7)
    page = text("SELECT id, kind, amount, balance_after, counterparty_account_id FROM ledger_entries"
                " WHERE account_id = :a ORDER BY id DESC LIMIT 20")
    transfer_ms, page_ms = [], []
    with app.app_context():
        for n in range(samples + 100):
            started = time.perf_counter()
            _one_transfer(rng, wallets, False, n)
            if n >= 100:
                transfer_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            run_in_transaction(lambda: db.session.execute(page, {"a": rng.choice(wallets)}).all())
            if n >= 100:
                page_ms.append((time.perf_counter() - started) * 1000)
        db.engine.dispose()
    return transfer_ms, page_ms


def scale(args: argparse.Namespace) -> None:
    url = f"{args.server}/bench_ledger"
    wallets = setup_ledger(url, args.server, args.wallets)
    loaded = len(wallets)
    rows = []
    for target in (10_000, 1_000_000):
        started = time.perf_counter()
        bulk_load(url, loaded, target)
        loaded = target
        load_s = time.perf_counter() - started
        transfer_ms, page_ms = latencies(url, wallets, args.samples)
        loaded += len(transfer_ms) + 100
        rows.append((target, statistics.median(transfer_ms), statistics.quantiles(transfer_ms, n=100)[98],
                     statistics.median(page_ms)))
        print(f"{target:>9} transfers (bulk load {load_s:.0f} s): transfer p50 {rows[-1][1]:.3f} ms,"
              f" p99 {rows[-1][2]:.3f} ms; statement page p50 {rows[-1][3]:.3f} ms", flush=True)
    print(f"p50 ratio 1M / 10k: transfer {rows[1][1] / rows[0][1]:.2f}, statement page {rows[1][3] / rows[0][3]:.2f}")
    app = _app(url)
    with app.app_context():
        started = time.perf_counter()
        problems = check.check_invariants()
        print("invariants:", "clean" if not problems else problems[:5], check.counts(),
              f"(check took {time.perf_counter() - started:.0f} s)")
        db.engine.dispose()


def profile(args: argparse.Namespace) -> None:
    url = f"{args.server}/bench_ledger"
    wallets = setup_ledger(url, args.server, args.wallets)
    ledger.single_statement_transfers = args.path == "one"
    app = _app(url)
    rng = random.Random(1)
    with app.app_context():
        for n in range(100):
            _one_transfer(rng, wallets, args.full, -n)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for n in range(args.samples):
            _one_transfer(rng, wallets, args.full, n)
        profiler.disable()
        elapsed = time.perf_counter() - started
        db.engine.dispose()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    print(f"{args.samples} transfers in {elapsed:.2f} s under the profiler")
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=SERVER, help="SQLAlchemy URL of the server, without database")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8])
    parser.add_argument("--wallets", type=int, default=1000)
    parser.add_argument("--path", choices=["one", "portable"], default="one",
                        help="one-statement PostgreSQL transfers or the portable multi-statement path")
    parser.add_argument("--full", action="store_true", help="add an idempotency key and two outbox alerts")
    parser.add_argument("--samples", type=int, default=3000, help="transfers timed by --scale and --profile")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scale", action="store_true")
    mode.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.scale:
        scale(args)
    elif args.profile:
        profile(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
