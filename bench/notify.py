"""What the SMS alerts cost the payment path: transfers per second with the two alerts enqueued (payer's
"balance payment" and payee's "transfer received", written in the transfer's transaction) vs with the
alert call removed, alternating in rounds in the same run. Target: at most 5 % slower. Also printed: CPU time
per transfer (this process and the PostgreSQL backends) with and without, and the difference, which moves
less than rates do when the machine's speed drifts.

The measured path is ``wallet.funds.pay_phone`` under ``run_idempotent`` (the transfer endpoint's work without
HTTP and without the argon2 payment-password check, which would hide a cost this small).

    .venv/bin/python bench/notify.py                      # PostgreSQL database bench_notify (recreated)
    .venv/bin/python bench/notify.py --workers 1 4 --seconds 5 --rounds 3
"""

# ruff: noqa: E402 - the imports below need the repository root on sys.path first
from __future__ import annotations

import argparse
import statistics
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
from bench.measure import fresh_database, rate
from core import clock
from core.db import db
from core.idempotency import fingerprint, run_idempotent
from core.ids import new_id
from security.models import User
from wallet import funds, ledger
from wallet.models import BANK_CLEARING

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_notify"


def make_user(phone: str, balance: int) -> str:
    hasher = current_app.extensions["passwords"]
    now = clock.now()
    user = User(id=new_id("usr"), phone=phone, login_password_hash=hasher.dummy_hash,
                payment_password_hash=hasher.dummy_hash, locale="en", created_at=now, updated_at=now)
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
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    fresh_database(args.database_url)
    app = create_app({"DATABASE_URL": args.database_url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False,
                      "SMS_CONSOLE_FILE": str(Path(tempfile.mkdtemp()) / "sms.jsonl"), "LOG_LEVEL": "WARNING",
                      "LIMIT_DAILY": 10**12})
    payers: list[tuple[str, str]] = []
    with app.app_context():
        upgrade()
        for i in range(max(args.workers)):
            payee_phone = f"+1212555{100 + i:04d}"
            make_user(payee_phone, 0)
            payers.append((make_user(f"+1202555{100 + i:04d}", 10**11), payee_phone))

    real_enqueue = funds.enqueue

    def pay(i: int) -> None:
        payer, payee_phone = payers[i]
        with app.app_context():
            run_idempotent(payer, uuid.uuid4().hex, fingerprint("POST", "/api/v1/transfers", {}),
                           lambda: (201, {"id": funds.pay_phone(payer, payee_phone, 1, "CNY", None).transfer.id}))

    admin = create_engine(args.database_url)
    print(f"{'workers':>7} {'with alerts/s':>14} {'without/s':>10} {'slower by':>10} "
          f"{'cpu ms with':>12} {'cpu ms without':>15} {'cpu cost':>9}")
    for workers in args.workers:
        with_alerts, without = [], []
        for _ in range(args.rounds):
            funds.enqueue = real_enqueue
            with_alerts.append(rate(workers, args.seconds, pay, admin))
            funds.enqueue = lambda *_a, **_k: None  # the alert call removed
            without.append(rate(workers, args.seconds, pay, admin))
        funds.enqueue = real_enqueue
        a, b = (statistics.median(run[0] for run in runs) for runs in (with_alerts, without))
        # CPU per transfer, this process and the PostgreSQL backends together: steadier than rates on a
        # machine whose speed drifts, and what the alerts cost whatever else runs.
        cpu_a, cpu_b = (statistics.median(run[1] + run[2] for run in runs) for runs in (with_alerts, without))
        print(f"{workers:>7} {a:>14.1f} {b:>10.1f} {(1 - a / b) * 100:>9.1f}% "
              f"{cpu_a * 1000:>12.2f} {cpu_b * 1000:>15.2f} {(cpu_a / cpu_b - 1) * 100:>8.1f}%")
    admin.dispose()
    with app.app_context():
        db.engine.dispose()


if __name__ == "__main__":
    main()
