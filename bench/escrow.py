"""Full escrow trades per second through the service layer, next to the argon2 bound, in the same run.

A trade is open → pay → ship → confirm, exactly as the endpoints run it minus HTTP: the payment password
is checked before paying and before confirming (two argon2id verifies, ``authorize_payment``), pay and
confirm run under an Idempotency-Key (``run_idempotent``), money moves buyer → the trade's escrow account
→ seller, every step appends to the hash-chained timeline and enqueues its SMS.

Two payment-password checks per trade bound the rate at (argon2 verifies per second) / 2; the target is
>= 0.8 of that bound. Both are measured with the same number of worker processes, each with its own app and
connections, as gunicorn's sync workers serve the endpoints (threads in one process would also wait for each
other's GIL, which no production worker does), alternating in rounds so drift affects both alike.

``in trades`` is the CPU one of the trade's own verifies takes, next to ``cpu ms/verify`` of the reference loop:
whether argon2 itself costs more inside a trade than back to back (0 to 2 ms more in the fifteenth session's runs).
Most of what ``ms beside argon2`` holds beyond the trade's work run back to back is the work after each check
running slower for having been away from the database for a verify's length (``--after-argon2``; bench/README).

The database first holds ``--history`` trades (default 2000, laid down through the same calls without the
password checks), vacuumed and with fresh statistics, as a platform in use would: on a nearly empty database
PostgreSQL plans each look-up as a sequential scan, the workers' prepared statements keep those plans while the
tables grow under the benchmark, and a trade's database time then grows with the number of trades measured.

    .venv/bin/python bench/escrow.py                      # PostgreSQL database bench_escrow (created)
    .venv/bin/python bench/escrow.py --workers 1 2 4 --seconds 8     # 4 processes on 2 cores: waits overlap
    .venv/bin/python bench/escrow.py --profile            # where one trade spends its time (1 worker)
    .venv/bin/python bench/escrow.py --after-argon2       # what a verify does to the rest of the trade (1 worker)
    .venv/bin/python bench/escrow.py --history 0          # on an empty database, as before (see above)
"""

# ruff: noqa: E402 - the imports below need the repository root on sys.path first
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository root first, and never this folder: bench/http.py would shadow the standard library's http.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from argon2 import PasswordHasher, Type
from flask import Flask, current_app
from flask_migrate import upgrade
from sqlalchemy import Engine, create_engine, event, text

from app import create_app
from bench.measure import fresh_database, rate_in_processes, server_cpu
from core import clock, sql
from core.db import db, run_in_transaction
from core.idempotency import fingerprint, run_idempotent
from core.ids import new_id
from security.accounts import authorize_payment
from security.identity_models import Identity
from security.models import User
from wallet import ledger, trades
from wallet.card_models import BankCard
from wallet.check import check_invariants
from wallet.models import BANK_CLEARING

PAYMENT_PASSWORD = "135790"
FAKE_TOKEN = "bench-card-token-1234"  # the bench never calls the bank
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_escrow"


def make_user(phone: str, real_name: str, balance: int) -> str:
    hasher = current_app.extensions["passwords"]
    now = clock.now()
    user = User(id=new_id("usr"), phone=phone, login_password_hash=hasher.hash("bench login phrase"),
                payment_password_hash=hasher.hash(PAYMENT_PASSWORD), locale="en", created_at=now, updated_at=now)
    db.session.add(user)
    db.session.flush()
    db.session.add(Identity(id=new_id("idv"), user_id=user.id, real_name=real_name, id_number_hash=uuid.uuid4().hex,
                            id_last4="0000", provider="bench", verified_at=now))
    db.session.add(BankCard(id=new_id("card"), user_id=user.id, bank_code="ICBC", card_hash=uuid.uuid4().hex,
                            last4="1234", bank_token=FAKE_TOKEN, holder_name=real_name, created_at=now))
    db.session.commit()
    if balance:
        ledger.transfer(ledger.system_account(BANK_CLEARING, "ICBC"), ledger.open_wallet(user.id), balance,
                        kind=ledger.TOPUP)
        db.session.commit()
    return user.id


def one_trade(buyer_id: str, seller_id: str, seller_phone: str, *, check_password: bool = True) -> None:
    """What the four endpoints do minus HTTP: pay and confirm run in the transaction of their password check,
    under an Idempotency-Key, as ``wallet.guarded`` runs them. Without ``check_password`` (the history laid down
    before measuring) the same rows are written, only faster."""
    trade_id = trades.open_trade(buyer_id, seller_phone, "bench item", 1999, 0, "CNY").id

    def guarded(action: str, effect: Callable[[], object]) -> None:
        request_hash = fingerprint("POST", f"/trades/{trade_id}/{action}", {})

        def idempotent() -> object:
            return run_idempotent(buyer_id, uuid.uuid4().hex, request_hash, lambda: (200, {"status": effect()}))

        if check_password:
            authorize_payment(buyer_id, PAYMENT_PASSWORD, idempotent)
        else:
            run_in_transaction(idempotent)

    guarded("pay", lambda: trades.pay(buyer_id, trade_id).status)
    trades.ship(seller_id, trade_id, "SF", "SF0001")
    guarded("confirm", lambda: trades.confirm(buyer_id, trade_id).status)


def after_argon2(app: Flask, pair: tuple[str, str, str], raw: PasswordHasher, stored: str, seconds: float,
                 admin: Engine) -> None:
    """What an argon2 verify does to the rest of a trade: the trade's wall time, its checks' CPU and its CPU
    besides them (here and in the database backends) when each check is a real verify, a busy loop as long as a
    verify in a loop, or nothing (the last two are diagnostics only: they do not check the password). A loop
    touches no memory where the verify sweeps 19 MiB through the caches; with nothing the work runs back to back.
    So the difference between argon2 and the loop is what the memory traffic costs the work after it, and between
    the loop and nothing what being away from the database for the length of a verify costs (the seventh session
    found the latter larger on this VM). Alternating blocks in one process, as ``--profile``."""
    passwords = app.extensions["passwords"]
    real_verify = passwords.verify
    cpu_of_verify = statistics.median(_cpu_of(lambda: raw.verify(stored, "x" * 64)) for _ in range(20))

    def spin(_stored_hash: str, _secret: str) -> bool:
        stop = time.process_time() + cpu_of_verify
        while time.process_time() < stop:
            pass
        return True

    spent = [0.0]
    variants = {"argon2": timed(real_verify, spent), "busy loop": timed(spin, spent),
                "none": timed(lambda _h, _s: True, spent)}
    # trades, wall seconds, CPU of the checks, CPU here besides the checks, database CPU
    totals = {name: [0, 0.0, 0.0, 0.0, 0.0] for name in variants}
    stop = time.perf_counter() + len(variants) * seconds
    block = 0
    while time.perf_counter() < stop:
        for name in list(variants)[::1 if block % 2 == 0 else -1]:
            passwords.verify = variants[name]
            server_before, cpu, spent[0] = server_cpu(admin), time.process_time(), 0.0
            started = time.perf_counter()
            while time.perf_counter() < started + 0.5:
                one_trade(*pair)
                totals[name][0] += 1
            figures = totals[name]
            figures[1] += time.perf_counter() - started
            figures[2] += spent[0]
            figures[3] += time.process_time() - cpu - spent[0]
            figures[4] += sum(used - server_before.get(pid, 0.0) for pid, used in server_cpu(admin).items())
        block += 1
    passwords.verify = real_verify
    admin.dispose()
    print(f"each check: argon2 verify, a busy loop of its CPU time ({1000 * cpu_of_verify:.2f} ms), or nothing; "
          f"{seconds:.0f} s each in alternating blocks of 0.5 s")
    print(f"{'checks':>10} {'trades':>7} {'ms/trade':>9} {'cpu ms/check':>13} {'cpu ms/trade beside the checks':>31} "
          f"{'database cpu ms/trade':>22}")
    for name, (count, wall, checks, here, server) in totals.items():
        print(f"{name:>10} {count:>7} {1000 * wall / count:>9.2f} {1000 * checks / count / 2:>13.2f} "
              f"{1000 * here / count:>31.2f} {1000 * server / count:>22.2f}")


def timed(check: Callable[[str, str], bool], spent: list[float]) -> Callable[[str, str], bool]:
    """``check`` (a password verification) adding the CPU time it takes to ``spent[0]``."""

    def run(stored_hash: str, secret: str) -> bool:
        started = time.process_time()
        try:
            return check(stored_hash, secret)
        finally:
            spent[0] += time.process_time() - started

    return run


def _cpu_of(call: Callable[[], object]) -> float:
    started = time.process_time()
    call()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--after-argon2", action="store_true",
                        help="the trade's other work after its argon2 verifies vs after as long a busy loop instead")
    parser.add_argument("--history", type=int, default=2000,
                        help="trades laid down (without password checks) before measuring, then VACUUM ANALYZE")
    args = parser.parse_args()

    fresh_database(args.database_url)
    sms = Path(tempfile.mkdtemp()) / "sms.jsonl"
    settings = {"DATABASE_URL": args.database_url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False,
                "SMS_CONSOLE_FILE": str(sms), "LOG_LEVEL": "WARNING"}
    app = create_app(settings)
    cfg = app.config
    pairs: list[tuple[str, str, str]] = []
    with app.app_context():
        upgrade()
        for i in range(max(args.workers)):
            seller_phone = f"+1202555{100 + i:04d}"
            seller = make_user(seller_phone, "Seller", 0)
            buyer = make_user(f"+1212555{100 + i:04d}", "Buyer", 10**10)
            pairs.append((buyer, seller, seller_phone))
        # A platform in use, not an empty database: with a handful of rows PostgreSQL plans every look-up as a
        # sequential scan, and a prepared statement keeps that plan while the tables grow under the benchmark.
        started = time.perf_counter()
        for n in range(args.history):
            one_trade(*pairs[n % len(pairs)], check_password=False)
        db.session.remove()
    if args.history:
        with create_engine(args.database_url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text("VACUUM ANALYZE"))  # nothing left for autovacuum to do mid-run
        print(f"history: {args.history} trades laid down in {time.perf_counter() - started:.0f} s, then VACUUM ANALYZE")

    raw = PasswordHasher(time_cost=cfg["ARGON2_TIME_COST"], memory_cost=cfg["ARGON2_MEMORY_KIB"],
                         parallelism=cfg["ARGON2_PARALLELISM"], type=Type.ID)
    stored = raw.hash("x" * 64)

    def argon2_worker(_i: int) -> Callable[[], object]:
        return lambda: raw.verify(stored, "x" * 64)

    def trade_worker(i: int) -> Callable[[], object]:
        worker_app = create_app(settings)  # after the fork: connections of its own
        # The CPU the trade's own two verifies take, to set beside the reference loop's (``part_cpu``).
        passwords, spent = worker_app.extensions["passwords"], [0.0]
        passwords.verify = timed(passwords.verify, spent)

        def trade() -> None:
            with worker_app.app_context():
                one_trade(*pairs[i])

        trade.part_cpu = lambda: spent[0]  # type: ignore[attr-defined]
        return trade

    if args.after_argon2:
        with app.app_context():
            after_argon2(app, pairs[0], raw, stored, args.seconds, create_engine(args.database_url))
        return

    if args.profile:
        statements: list[str] = []
        with app.app_context():  # statements through SQLAlchemy and on the driver's cursor (core.sql) alike
            event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2].split(None, 1)[0]))
        sql.listen(lambda statement: statements.append(statement.split(None, 1)[0]))
        profiler = cProfile.Profile()
        stop, count = time.perf_counter() + args.seconds, 0
        profiler.enable()
        while time.perf_counter() < stop:  # in this thread: cProfile sees only the thread it runs in
            with app.app_context():
                one_trade(*pairs[0])
            count += 1
        profiler.disable()
        print(f"{count} trades profiled, {len(statements) / max(count, 1):.1f} SQL statements per trade:",
              ", ".join(f"{verb} {n / max(count, 1):.1f}" for verb, n in Counter(statements).most_common()))
        out = io.StringIO()
        ours = r"/(wallet|core|security|notifications|bench)/"
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(ours, 40)
        print(out.getvalue())
        return

    print(f"argon2id m={cfg['ARGON2_MEMORY_KIB']} KiB t={cfg['ARGON2_TIME_COST']} p={cfg['ARGON2_PARALLELISM']}, "
          f"{args.rounds} rounds of {args.seconds:.0f} s each")
    print(f"{'workers':>7} {'argon2 verifies/s':>18} {'bound trades/s':>15} {'trades/s':>9} {'ratio':>6} "
          f"{'cpu ms/verify':>14} {'in trades':>10} {'cpu ms/trade':>13} {'+ pg ms':>8} {'cpu ratio':>9} "
          f"{'ms beside argon2':>17}")
    with app.app_context():
        db.engine.dispose()  # no connection may cross the workers' fork
    admin = create_engine(args.database_url)
    for workers in args.workers:
        argon2_runs, trade_runs = [], []
        for _ in range(args.rounds):
            argon2_runs.append(rate_in_processes(workers, args.seconds, argon2_worker, admin))
            trade_runs.append(rate_in_processes(workers, args.seconds, trade_worker, admin))
        bound = statistics.median(run[0] for run in argon2_runs) / 2
        trades_per_s = statistics.median(run[0] for run in trade_runs)
        cpu_verify = statistics.median(run[1] + run[2] for run in argon2_runs)
        cpu_trade = statistics.median(run[1] for run in trade_runs)
        pg_trade = statistics.median(run[2] for run in trade_runs)
        verify_in_trade = statistics.median(run[3] for run in trade_runs) / 2
        # What a trade takes besides its two verifies, per worker: the figure to drive down, and one that does
        # not move with the day's argon2 speed the way the ratio does.
        beside = 1000 * workers * (1 / trades_per_s - 2 / (bound * 2))
        print(f"{workers:>7} {bound * 2:>18.1f} {bound:>15.1f} {trades_per_s:>9.1f} {trades_per_s / bound:>6.2f} "
              f"{1000 * cpu_verify:>14.2f} {1000 * verify_in_trade:>10.2f} {1000 * cpu_trade:>13.2f} "
              f"{1000 * pg_trade:>8.2f} {2 * cpu_verify / (cpu_trade + pg_trade):>9.2f} {beside:>17.2f}")
    admin.dispose()
    with app.app_context():
        problems = check_invariants()
        print("ledger check after the run:", problems or "clean")
        db.engine.dispose()


if __name__ == "__main__":
    main()
