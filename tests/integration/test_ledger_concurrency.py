"""Real threads against the real database: no lost update, no negative wallet, no deadlock, no double
resolution. The big random-transfer test needs PostgreSQL; the races on one hold or one wallet run on both."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select

from core.db import db
from wallet import ledger
from wallet.check import check_invariants
from wallet.errors import HoldAlreadyResolved, InsufficientFunds
from wallet.models import BANK_CLEARING, LedgerAccount

THREADS, TRANSFERS_PER_THREAD, WALLETS = 16, 300, 50
FUNDING = 100_00


def run_threads(app: Flask, count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Runs ``work(n)`` in ``count`` threads, each with its own app context (and so its own session), all
    released at once; returns whatever they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def thread(n: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                work(n)
            except BaseException as exc:  # reported by the test, not swallowed
                errors.append(exc)

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.fixture
def database_errors(app: Flask) -> Iterator[Counter[str]]:
    """SQLSTATEs of every error the database raised during the test, retried or not."""
    seen: Counter[str] = Counter()
    with app.app_context():
        engine = db.engine

    def record(context: Any) -> None:
        seen[getattr(context.original_exception, "sqlstate", None) or type(context.original_exception).__name__] += 1

    event.listen(engine, "handle_error", record)
    yield seen
    event.remove(engine, "handle_error", record)


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["one_statement", "portable"])
def test_sixteen_threads_of_random_transfers_keep_the_books(app, database_errors, monkeypatch, path):
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("needs PostgreSQL (WALLET_TEST_DATABASE_URL)")
    monkeypatch.setattr(ledger, "single_statement_transfers", path == "one_statement")
    with app.app_context():
        wallets = [ledger.open_wallet(f"usr_{n:02d}") for n in range(WALLETS)]
        for n, wallet in enumerate(wallets):
            ledger.transfer(ledger.system_account(BANK_CLEARING, "ICBC", shard=n % 8), wallet, FUNDING,
                            kind=ledger.TOPUP)
    hot = wallets[:2]
    opposite_pairs = [(wallets[2], wallets[3]), (wallets[4], wallets[5])]
    done: list[tuple[str, str, int]] = []
    refused = Counter[str]()
    lock = threading.Lock()

    def work(n: int) -> None:
        rng = random.Random(n)
        for i in range(TRANSFERS_PER_THREAD):
            if i % 3 == 0:  # a third touch one of the two hot wallets, in both directions
                other = rng.choice([w for w in wallets if w not in hot] + [hot[1]])
                debit, credit = (hot[0], other) if rng.random() < 0.5 else (other, rng.choice(hot))
            elif i % 3 == 1:  # half the threads pay a->b while the other half pay b->a
                a, b = rng.choice(opposite_pairs)
                debit, credit = (a, b) if n % 2 else (b, a)
            else:
                debit, credit = rng.sample(wallets, 2)
            if debit == credit:
                continue
            amount = rng.randint(1, 30_00)
            try:
                ledger.transfer(debit, credit, amount, kind=ledger.PAYMENT)
            except InsufficientFunds:
                with lock:
                    refused[debit] += 1
                continue
            with lock:
                done.append((debit, credit, amount))

    assert run_threads(app, THREADS, work) == []

    expected = dict.fromkeys(wallets, FUNDING)
    for debit, credit, amount in done:
        expected[debit] -= amount
        expected[credit] += amount
    with app.app_context():
        stored = {row.id: row for row in db.session.scalars(select(LedgerAccount).where(LedgerAccount.id.in_(wallets)))}
        assert {w: stored[w].credits_posted - stored[w].debits_posted for w in wallets} == expected
        assert all(row.credits_posted - row.debits_posted - row.debits_pending >= 0 for row in stored.values())
        assert sum(expected.values()) == WALLETS * FUNDING
        db.session.commit()
        assert check_invariants() == []
    assert len(done) > THREADS * TRANSFERS_PER_THREAD // 2
    assert sum(refused[w] for w in hot) > 0  # the hot wallets did run dry: the balance check was exercised
    # Locks are taken in one order, so PostgreSQL never had to break a deadlock (none was even retried).
    assert database_errors["40P01"] == 0, database_errors


def test_racing_resolutions_of_one_hold_resolve_it_once(app):
    with app.app_context():
        wallet = ledger.open_wallet("usr_alice")
        bank = ledger.system_account(BANK_CLEARING, "ICBC", shard=0)
        ledger.transfer(bank, wallet, 100_00, kind=ledger.TOPUP)
        holds = [ledger.create_hold(wallet, bank, 1_00, kind=ledger.WITHDRAWAL).id for _ in range(10)]
    outcomes = Counter[str]()
    lock = threading.Lock()

    def work(n: int) -> None:
        for hold in holds:
            try:
                if n % 2:
                    ledger.post_hold(hold, 50)
                    outcome = "posted"
                else:
                    ledger.void_hold(hold)
                    outcome = "voided"
            except HoldAlreadyResolved:
                outcome = "refused"
            with lock:
                outcomes[outcome] += 1

    assert run_threads(app, 8, work) == []
    assert outcomes["posted"] + outcomes["voided"] == len(holds)
    assert outcomes["refused"] == 7 * len(holds)
    with app.app_context():
        balance = ledger.balance(wallet)
        assert balance.pending == 0
        assert balance.posted == 100_00 - 50 * outcomes["posted"]
        assert check_invariants() == []


def test_racing_openings_of_one_wallet_open_one(app):
    opened: list[str] = []

    def work(_: int) -> None:
        opened.append(ledger.open_wallet("usr_alice"))

    assert run_threads(app, 8, work) == []
    assert len(set(opened)) == 1
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(LedgerAccount)) == 1
