"""Ledger benchmarks on PostgreSQL (never run as timed tests).

Throughput (default): transfers per second through ``wallet.ledger.transfer`` at 1 and 8 concurrent clients,
next to ``pgbench``'s default TPC-B-like script at scale 10 with the same client counts, in the same run,
printed as ratios, with the CPU each transfer cost in Python and in its PostgreSQL backend.

Clients are threads, by default all in one process. Measured on the 2-core test machine, 8 *processes* made
every transfer cost about twice the Python CPU of 8 threads (eight interpreters and eight backends evicting
each other from the caches of two cores) and gave about half the throughput; the GIL costs little here
because a transfer spends most of its wall time waiting on PostgreSQL, with the GIL released. ``--processes``
spreads the threads over several processes (what a gunicorn deployment with threaded workers does).

    .venv/bin/python bench/ledger.py                      # one-statement transfers vs pgbench, c=1 and c=8
    .venv/bin/python bench/ledger.py --path portable      # the multi-statement path (SQLite's) on PostgreSQL
    .venv/bin/python bench/ledger.py --full               # + idempotency key and two outbox alerts per transfer
    .venv/bin/python bench/ledger.py --scale              # p50 latency with 10k and with 1M existing transfers
    .venv/bin/python bench/ledger.py --profile            # cProfile of one client

It drops and recreates the databases ``bench_ledger`` and ``bench_pgbench`` on ``--server``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Import the project from the repository root, and never the other scripts in bench/ (bench/http.py would
# shadow the standard library's http).
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from app import create_app  # noqa: E402
from core import idempotency, sql  # noqa: E402
from core.db import db, run_in_transaction  # noqa: E402
from notifications.outbox import enqueue  # noqa: E402
from wallet import check, ledger, statement  # noqa: E402
from wallet.errors import InsufficientFunds  # noqa: E402
from wallet.models import BANK_CLEARING  # noqa: E402

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
FUNDING = 10**10  # per wallet: enough that no benchmark transfer is refused
OWNER = "usr_bench_{:06d}"  # the owner of the n-th wallet


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
        ids = [ledger.open_wallet(OWNER.format(n)) for n in range(wallets)]
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


def _backend_cpu(pid: int) -> float:
    """CPU seconds used so far by a PostgreSQL backend on this machine (0 if it is not readable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process(url: str, wallets: list[str], threads: int, seconds: float, path: str, full: bool, barrier: Any,
             results: Any) -> None:
    """One worker process running ``threads`` client threads, each with its own app context and connection."""
    ledger.single_statement_transfers = path == "one"
    app = _app(url)
    ready = threading.Barrier(threads + 1)
    counts: list[tuple[int, int, float]] = []

    def client() -> None:
        rng = random.Random()
        with app.app_context():
            for n in range(50):  # warm up: connect, let psycopg prepare the statements
                _one_transfer(rng, wallets, full, -n)
            backend = run_in_transaction(lambda: db.session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            ready.wait()
            ready.wait()
            done = refused = 0
            backend_cpu = _backend_cpu(backend)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                try:
                    _one_transfer(rng, wallets, full, done)
                    done += 1
                except InsufficientFunds:
                    refused += 1
            counts.append((done, refused, _backend_cpu(backend) - backend_cpu))

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()  # every client is connected and warm
    barrier.wait()  # ... in every process
    started = os.times()
    ready.wait()
    for thread in pool:
        thread.join()
    finished = os.times()
    with app.app_context():
        db.engine.dispose()
    python_cpu = finished.user - started.user + finished.system - started.system
    results.put((sum(c[0] for c in counts), sum(c[1] for c in counts), python_cpu, sum(c[2] for c in counts)))


def ledger_tps(url: str, wallets: list[str], clients: int, processes: int, seconds: float, path: str, full: bool
               ) -> tuple[float, float, float]:
    """Transfers per second with ``clients`` client threads spread over ``processes`` processes, and the Python
    and PostgreSQL CPU milliseconds each transfer took."""
    processes = min(processes, clients)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    shares = [clients // processes + (1 if n < clients % processes else 0) for n in range(processes)]
    procs = [ctx.Process(target=_process, args=(url, wallets, share, seconds, path, full, barrier, results))
             for share in shares]
    for proc in procs:
        proc.start()
    counts = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    if any(refused for _, refused, _, _ in counts):
        raise SystemExit(f"transfers were refused: {counts}")
    done = sum(c[0] for c in counts)
    return done / seconds, 1000 * sum(c[2] for c in counts) / done, 1000 * sum(c[3] for c in counts) / done


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
    print(f"{args.seconds:.0f} s per run, {args.wallets} wallets, clients as threads in {args.processes} process(es),"
          " pgbench TPC-B-like scale 10")
    print(f"{'clients':>7}  {label:>48}  {'pgbench tps':>11}  {'ratio':>5}   CPU ms per transfer")
    for clients in args.clients:
        ours, python_ms, postgres_ms = ledger_tps(url, wallets, clients, args.processes, args.seconds, args.path,
                                                  args.full)
        theirs = pgbench_tps("bench_pgbench", clients, args.seconds)
        print(f"{clients:>7}  {ours:>48.0f}  {theirs:>11.0f}  {ours / theirs:>5.2f}"
              f"   Python {python_ms:.3f}, PostgreSQL backend {postgres_ms:.3f}", flush=True)
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
    """Milliseconds per transfer and per statement page (the 20 newest lines of a wallet, as
    ``GET /api/v1/wallet/transactions`` reads them: ``wallet.statement.lines``)."""
    app = _app(url)
    rng = random.Random(7)
    transfer_ms, page_ms = [], []
    with app.app_context():
        for n in range(samples + 100):
            started = time.perf_counter()
            _one_transfer(rng, wallets, False, n)
            if n >= 100:
                transfer_ms.append((time.perf_counter() - started) * 1000)
            owner = OWNER.format(rng.randrange(len(wallets)))
            started = time.perf_counter()
            statement.lines(sql.Viewing(owner), limit=20, before_id=None, kind=None, from_date=None, to_date=None)
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
    parser.add_argument("--processes", type=int, default=1,
                        help="worker processes the client threads are spread over (default 1, see above)")
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
