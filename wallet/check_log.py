"""The outcome of each ledger invariant check, kept so monitoring can alert on it (``/metrics``)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from core import clock
from core.db import UTCDateTime, db, run_in_transaction
from wallet.check import check_invariants

log = logging.getLogger(__name__)


class LedgerCheck(db.Model):
    __tablename__ = "ledger_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ok: Mapped[bool] = mapped_column()
    problem_count: Mapped[int] = mapped_column(Integer)
    problems: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))


def run_and_record(source: str) -> list[str]:
    """Check every invariant, store the outcome, return the problems (empty when the books are clean)."""
    problems = check_invariants()
    if problems and source != "cli":  # the command prints them itself
        # Found by an audit: the worker's check stored its findings for /metrics and logged nothing.
        log.error("ledger check found %d problem(s); `flask wallet check` lists them all: %s%s", len(problems),
                  "; ".join(problems[:5]), " ..." if len(problems) > 5 else "")
    run_in_transaction(lambda: db.session.add(LedgerCheck(
        checked_at=clock.now(), ok=not problems, problem_count=len(problems), problems="\n".join(problems)[:20000],
        source=source)))
    return problems


def gauges():
    last = run_in_transaction(lambda: db.session.scalars(  # read-only: its end expires nothing, so no read again
        select(LedgerCheck).order_by(LedgerCheck.id.desc()).limit(1)).first(), read_only=True)
    if last is None:
        return []
    return [
        ("wallet_ledger_check_ok", "1 if the last ledger invariant check was clean", [], [([], float(last.ok))]),
        ("wallet_ledger_check_problems", "problems found by the last ledger check", [],
         [([], float(last.problem_count))]),
        ("wallet_ledger_check_timestamp_seconds", "when the last ledger check ran", [],
         [([], last.checked_at.timestamp())]),
    ]
