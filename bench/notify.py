"""What the SMS alerts cost the payment path: transfers per second with the two alerts enqueued (payer's
"balance payment" and payee's "transfer received", one ``alert_events`` row written in the transfer's transaction,
which a dispatcher expands into the two alerts; none runs during the benchmark) vs with the
alert call removed, in short blocks alternating through the same run. Target: at most 5 % slower. Also printed:
CPU time per transfer (the workers and the PostgreSQL backends) with and without, and the difference, which
moves less than rates do when the machine's speed drifts; and both comparisons block pair by block pair
(median and interquartile range), which shows how much noise there was.

Each worker is a forked process with its own app and connections that lives through the run, as gunicorn's sync
workers do. Until the seventh session they were threads of one process, which also waited for each other's GIL;
that made the alert's Python look dearer with two workers than with one.

The measured path is ``wallet.funds.pay_phone`` under ``run_idempotent``: the transfer endpoint's work without
HTTP and without the argon2 payment-password check, which would hide a cost this small. ``--with-password``
adds that check (``authorize_payment`` with the payment in its transaction, as ``wallet.guarded`` runs it and as
every transfer a user makes pays it).

    .venv/bin/python bench/notify.py                      # PostgreSQL database bench_notify (recreated)
    .venv/bin/python bench/notify.py --workers 1 2 4 --seconds 20 --block 0.5
    .venv/bin/python bench/notify.py --with-password --block 1      # the whole payment path, argon2 included
"""

# ruff: noqa: E402 - the imports below need the repository root on sys.path first
from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(_BENCH.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

from flask import current_app
from flask_migrate import upgrade
from sqlalchemy import create_engine

from app import create_app
from bench.measure import fresh_database, paired_in_processes
from core import clock
from core.db import db
from core.idempotency import fingerprint, run_idempotent
from core.ids import new_id
from security.accounts import authorize_payment
from security.models import User
from wallet import funds, ledger
from wallet.models import BANK_CLEARING

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_notify"


PAYMENT_PASSWORD = "135790"


def make_user(phone: str, balance: int) -> str:
    hasher = current_app.extensions["passwords"]
    now = clock.now()
    user = User(id=new_id("usr"), phone=phone, login_password_hash=hasher.dummy_hash,
                payment_password_hash=hasher.hash(PAYMENT_PASSWORD), locale="en", created_at=now, updated_at=now)
    db.session.add(user)
    db.session.commit()
    wallet = ledger.open_wallet(user.id)
    if balance:
        ledger.transfer(ledger.system_account(BANK_CLEARING, "ICBC"), wallet, balance, kind=ledger.TOPUP)
    db.session.commit()
    return user.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=12.0, help="per variant and worker count")
    parser.add_argument("--block", type=float, default=0.4, help="seconds per block")
    parser.add_argument("--with-password", action="store_true", help="check the payment password before paying")
    args = parser.parse_args()

    fresh_database(args.database_url)
    settings = {"DATABASE_URL": args.database_url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False,
                "SMS_CONSOLE_FILE": str(Path(tempfile.mkdtemp()) / "sms.jsonl"), "LOG_LEVEL": "WARNING",
                "LIMIT_DAILY": 10**12, "LIMIT_PAYMENTS_PER_PAYEE_DAILY": 2**31 - 1}
    app = create_app(settings)
    payers: list[tuple[str, str]] = []
    with app.app_context():
        upgrade()
        for i in range(max(args.workers)):
            payee_phone = f"+1212555{100 + i:04d}"
            make_user(payee_phone, 0)
            payers.append((make_user(f"+1202555{100 + i:04d}", 10**11), payee_phone))

    real_enqueue = funds.enqueue

    def worker(i: int):
        """In worker process ``i`` (after the fork): an app with connections of its own, and the unit of work
        for each variant: "without" is the transfer with the alert call removed."""
        worker_app = create_app(settings)
        payer, payee_phone = payers[i]

        def unit_of(variant: str):
            enqueue = real_enqueue if variant == "with" else (lambda *_a, **_k: None)

            def transfer() -> object:
                return run_idempotent(payer, uuid.uuid4().hex, fingerprint("POST", "/api/v1/transfers", {}), lambda: (
                    201, {"id": funds.pay_phone(payer, payee_phone, 1, "CNY", None).transfer.id}))

            def pay() -> None:
                funds.enqueue = enqueue
                with worker_app.app_context():
                    if args.with_password:
                        authorize_payment(payer, PAYMENT_PASSWORD, transfer)
                    else:
                        transfer()

            return pay

        return unit_of

    with app.app_context():
        db.engine.dispose()  # no connection may cross the workers' fork
    admin = create_engine(args.database_url)
    print("path: " + ("payment password check + transfer" if args.with_password else "transfer (no password check)"))
    print(f"blocks of {args.block:.2f} s alternating (A B, B A, ...), {args.seconds:.0f} s per variant; "
          "paired: median over block pairs [interquartile range]")
    print(f"{'workers':>7} {'with/s':>8} {'without/s':>10} {'slower by':>10} {'paired':>20} "
          f"{'cpu ms with':>12} {'without':>8} {'cpu cost':>9} {'paired':>20}")
    for workers in args.workers:
        figures = paired_in_processes(workers, args.seconds, worker, admin, ["without", "with"], args.block)
        a, b = figures["with"], figures["without"]

        def pct(x: float) -> str:
            return f"{x * 100:+.1f}%"

        slower = f"{pct(1 - a['rate_vs'])} [{pct(1 - a['rate_vs_high'])}, {pct(1 - a['rate_vs_low'])}]"
        cost = f"{pct(a['cpu_vs'] - 1)} [{pct(a['cpu_vs_low'] - 1)}, {pct(a['cpu_vs_high'] - 1)}]"
        print(f"{workers:>7} {a['rate']:>8.1f} {b['rate']:>10.1f} {pct(1 - a['rate'] / b['rate']):>10} {slower:>20} "
              f"{a['cpu'] * 1000:>12.2f} {b['cpu'] * 1000:>8.2f} {pct(a['cpu'] / b['cpu'] - 1):>9} {cost:>20}")
    admin.dispose()
    with app.app_context():
        db.engine.dispose()


if __name__ == "__main__":
    main()
