"""Real processes against one fresh PostgreSQL database, for the many-instances and crash suites.

``Stack`` creates a database (``e2e_<random>``), applies the migrations with ``flask --app app db upgrade``,
and starts, as separate process groups, two gunicorn instances (``gunicorn -c gunicorn.conf.py`` on free
ports, ``WEB_CONCURRENCY=2``), two ``flask --app app notifications dispatch`` and two ``flask --app app
worker`` processes, all in production mode and all appending SMS to ONE shared console file. It can kill any
of them with SIGKILL and start it again, and it cleans everything up whatever happens:

* every process is the leader of its own process group; gunicorn's workers inherit the group, so workers
  orphaned by a SIGKILLed master are still found (and killed) through the group at the end;
* every group and the database are written to a run file in ``$TMPDIR/wallet-e2e/``; a later run reaps
  groups and databases left behind by a run whose pytest process died (only groups whose processes still
  run this repository's gunicorn or flask, and only ``e2e_`` databases recorded there);
* SIGTERM (a CI timeout) unwinds the test like Ctrl-C, so the ``with`` block cleans up; an ``atexit`` hook
  covers an interpreter exit that skipped it.

Everything that waits polls a condition until a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_SERVER = os.environ.get("WALLET_E2E_PG", "postgresql://postgres@127.0.0.1:5432")
RUN_DIR = Path(tempfile.gettempdir()) / "wallet-e2e"
DB_PREFIX = "e2e_"

# Variables a developer's shell may carry that must not leak into the processes under test.
_SCRUB = ("WALLET_", "DATABASE_URL", "FLASK_", "TWILIO_", "SMS_", "RATELIMIT_", "ESCROW_", "PROMETHEUS_",
          "GUNICORN_", "WEB_CONCURRENCY", "BIND", "LOG_", "DISPATCH_", "LEDGER_", "WITHDRAWAL_", "BANK_",
          "IDEMPOTENCY_", "LIMIT_", "PASSWORD_PEPPER", "ARGON2_", "LOGIN_LIMIT", "MAX_CONTENT")


@functools.cache
def skip_reason() -> str | None:
    """Why the long e2e suites do not run here, or None when they do."""
    if os.environ.get("WALLET_E2E") != "1":
        return "long end-to-end suite (a minute or two): set WALLET_E2E=1 to run it (.ci/e2e.sh does)"
    if not postgres_available():
        return f"PostgreSQL is not reachable at {PG_SERVER}"
    return None


def postgres_available() -> bool:
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _raise_keyboard_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a new gunicorn could bind ``port`` (it sets SO_REUSEADDR too, so TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
        return True


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call ``condition`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[1])


def _ours(pid: int) -> bool:
    """A process running this repository's gunicorn or flask (guards against pid reuse when reaping)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return ("gunicorn" in cmdline or "flask" in cmdline) and cwd == str(ROOT)


def kill_group(pgid: int, grace: float = 5.0, *, verify: bool = False) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after ``grace`` seconds. ``verify``: only when every
    member still runs this repository's gunicorn or flask (the group id may have been reused)."""
    if verify:
        members = _group_members(pgid)
        if not members or not all(_ours(pid) for pid in members):
            return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.05)


def drop_database(name: str) -> None:
    assert name.startswith(DB_PREFIX), name
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reap_stale_runs() -> list[str]:
    """Kill process groups and drop databases recorded by runs whose pytest process is gone."""
    reaped: list[str] = []
    if not RUN_DIR.exists():
        return reaped
    for run_file in RUN_DIR.glob("*.json"):
        try:
            record = json.loads(run_file.read_text())
        except (OSError, ValueError):
            continue
        owner = int(record.get("owner", 0))
        if owner and Path(f"/proc/{owner}").exists():
            continue  # that run is still going
        for pgid in record.get("pgids", []):
            members = _group_members(pgid)
            if members and all(_ours(pid) for pid in members):
                kill_group(pgid, grace=1.0, verify=True)
                reaped.append(f"group {pgid}")
        for name in record.get("databases", []):
            if name.startswith(DB_PREFIX):
                with contextlib.suppress(psycopg.Error):
                    drop_database(name)
                    reaped.append(f"database {name}")
        run_file.unlink(missing_ok=True)
    return reaped


@dataclass
class Proc:
    """One incarnation of one process (a restart is a new ``Proc``)."""

    name: str  # web0, web1, dispatch0, ...
    kind: str  # web, dispatcher, worker
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Stack:
    """The whole production set-up against one fresh database. Use as a context manager."""

    workdir: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    web_instances: int = 2
    dispatchers: int = 2
    workers: int = 2
    web_concurrency: int = 2

    def __post_init__(self) -> None:
        self.database = f"{DB_PREFIX}{uuid.uuid4().hex[:10]}"
        self.database_url = f"{PG_SERVER}/{self.database}"
        self.sms_file = self.workdir / "sms.jsonl"
        self.logs = self.workdir / "logs"
        self.ports = [free_port() for _ in range(self.web_instances)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.current: dict[str, Proc] = {}
        self.history: list[Proc] = []
        self.pgids: list[int] = []
        self.starts: Counter[str] = Counter()
        self._lock = threading.RLock()
        self._run_file = RUN_DIR / f"{uuid.uuid4().hex}.json"
        self._closed = False
        self.env = self._environment()

    # --- environment, bookkeeping ----------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        env.update({
            "WALLET_ENV": "production",
            "PASSWORD_PEPPER": secrets.token_hex(32),
            "DATABASE_URL": self.database_url,
            "RATELIMIT_ENABLED": "false",
            "SMS_CONSOLE_FILE": str(self.sms_file),
            "DISPATCH_INTERVAL_SECONDS": "0.1",
            "SMS_BATCH_SIZE": "10",
            "SMS_BACKOFF_BASE_SECONDS": "0.2",
            "SMS_BACKOFF_MAX_SECONDS": "2",
            "LEDGER_CHECK_SECONDS": "5",
            "ESCROW_SWEEP_SECONDS": "1",
            "WITHDRAWAL_RETRY_SECONDS": "0.5",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        })
        env.update(self.env_overrides)
        return env

    def _record(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        payload = {"owner": os.getpid(), "pgids": self.pgids, "databases": [self.database],
                   "workdir": str(self.workdir)}
        tmp = self._run_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(self._run_file)
        for proc in self.current.values():
            (self.workdir / "pids").mkdir(exist_ok=True)
            (self.workdir / "pids" / f"{proc.name}.pid").write_text(str(proc.pid))

    # --- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        reap_stale_runs()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.sms_file.touch()
        atexit.register(self.close)
        self._previous_sigterm = None
        if threading.current_thread() is threading.main_thread():
            # A CI timeout sends SIGTERM: unwind (and so clean up) instead of dying with the processes running.
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        self._record()
        try:
            upgrade = self.flask("db", "upgrade", timeout=180)
            if upgrade.returncode != 0:
                raise RuntimeError(f"flask db upgrade failed:\n{upgrade.stdout}\n{upgrade.stderr}")
            for i in range(self.web_instances):
                self.start_web(i)
            for i in range(self.dispatchers):
                self.start("dispatcher", i)
            for i in range(self.workers):
                self.start("worker", i)
            for i in range(self.web_instances):
                self.wait_ready(i)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _reap(self) -> bool:
        """Collect exited leaders (a zombie still counts as a member of its process group)."""
        for proc in self.history:
            proc.popen.poll()
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        leaders = {proc.pid: proc for proc in self.history}
        # A live leader's group is surely ours; a dead leader's (orphaned gunicorn workers) is checked first.
        groups = [pgid for pgid in self.pgids if leaders[pgid].alive() or (
            (members := _group_members(pgid)) and all(_ours(pid) for pid in members))]
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
            with contextlib.suppress(TimeoutError):
                poll(lambda: self._reap() and not any(group_alive(g) for g in groups), wait, "the processes to stop",
                     0.05)
        for proc in self.history:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)
        try:
            drop_database(self.database)
        finally:
            self._run_file.unlink(missing_ok=True)
            atexit.unregister(self.close)
            if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    # --- processes -------------------------------------------------------------------------------------

    def _spawn(self, name: str, kind: str, argv: list[str], extra_env: dict[str, str] | None = None,
               port: int | None = None) -> Proc:
        with self._lock:
            if self._closed:
                raise RuntimeError("stack closed")
            self.starts[name] += 1
            log = self.logs / f"{name}.{self.starts[name]}.log"
            with log.open("wb") as handle:
                popen = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=handle,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            proc = Proc(name, kind, popen, log, port)
            self.current[name] = proc
            self.history.append(proc)
            self.pgids.append(popen.pid)  # start_new_session: the leader's pid is the group id
            self._record()
            return proc

    def start_web(self, index: int) -> Proc:
        port = self.ports[index]
        poll(lambda: port_free(port), 60, f"port {port} to be free")
        metrics = self.workdir / f"metrics-web{index}"
        config = os.environ.get("WALLET_E2E_GUNICORN_CONF", "gunicorn.conf.py")  # to try another configuration
        return self._spawn(f"web{index}", "web", [str(BIN / "gunicorn"), "-c", config], {
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(self.web_concurrency),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }, port=port)

    def start(self, kind: str, index: int) -> Proc:
        args = {"dispatcher": ["notifications", "dispatch"], "worker": ["worker"]}[kind]
        name = f"{'dispatch' if kind == 'dispatcher' else 'worker'}{index}"
        return self._spawn(name, kind, [str(BIN / "flask"), "--app", "app", *args])

    def wait_ready(self, index: int, timeout: float = 90) -> None:
        proc = self.current[f"web{index}"]
        url = f"{self.urls[index]}/readyz"

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{tail(proc.log)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                    return response.status == 200
            except OSError:
                return False

        poll(ready, timeout, f"{proc.name} to answer /readyz", interval=0.1)

    def kill(self, name: str, *, whole_group: bool = False) -> Proc:
        """SIGKILL the current incarnation of ``name`` (only its leader unless ``whole_group``)."""
        proc = self.current[name]
        if whole_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)
        return proc

    def web_workers(self, index: int) -> list[int]:
        """The worker processes of ``web<index>``'s current master."""
        master = self.current[f"web{index}"].pid
        return [pid for pid in _group_members(master) if pid != master and _parent(pid) == master]

    def restart_web(self, index: int) -> Proc:
        """Start ``web<index>`` again once the port is free (orphaned workers of a SIGKILLed master keep it
        until they notice their parent is gone and finish their request), then wait until it answers."""
        proc = self.start_web(index)
        self.wait_ready(index)
        return proc

    def ensure_all_running(self) -> list[str]:
        """Start again whatever is not running (after chaos); returns the names restarted."""
        restarted = []
        for name, proc in list(self.current.items()):
            if proc.alive():
                continue
            restarted.append(name)
            if proc.kind == "web":
                self.restart_web(int(name[3:]))
            else:
                self.start(proc.kind, int(name[-1]))
        return restarted

    def flask(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "flask"), "--app", "app", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    # --- the database and the console file -------------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return list(conn.execute(sql, params).fetchall())

    def console_lines(self) -> tuple[list[dict[str, Any]], int]:
        """The messages the console sender appended, and how many lines did not parse (a torn write)."""
        messages, broken = [], 0
        for line in self.sms_file.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                messages.append(json.loads(line))
            except ValueError:
                broken += 1
        return messages, broken

    def log_problems(self, expected: str | None = None) -> list[str]:
        """Lines of every process log that show an unhandled error (tracebacks, 500s, ERROR level), except
        those matching the regular expression ``expected``."""
        found = []
        for log in sorted(self.logs.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if expected and re.search(expected, line):
                    continue
                if re.search(r"Traceback|unhandled error|\"level\": \"(ERROR|CRITICAL)\"|\[(ERROR|CRITICAL)\]", line):
                    found.append(f"{log.name}: {line[:400]}")
        return found


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- invariants ------------------------------------------------------------------------------------------


def trade_problems(stack: Stack) -> tuple[int, list[str], Counter[str]]:
    """Every trade's escrow account balance equals paid - refunded - released (the fee is part of what was
    released), finished and closed trades hold nothing, amounts are within bounds and consistent with the
    state. Returns (trades checked, problems, trades by status)."""
    rows = stack.query("""
        SELECT t.id, t.status, t.amount, t.shipping_fee, t.paid_amount, t.refunded_amount, t.released_amount,
               t.fee_amount, t.escrow_account_id, a.credits_posted - a.debits_posted, a.debits_pending,
               a.credits_pending, t.shipped_at IS NOT NULL, t.close_reason
        FROM trades AS t LEFT JOIN ledger_accounts AS a ON a.id = t.escrow_account_id ORDER BY t.id""")
    problems: list[str] = []
    by_status: Counter[str] = Counter()
    for (tid, status, amount, shipping, paid, refunded, released, fee, account, balance, dpend, cpend, shipped,
         reason) in rows:
        by_status[status] += 1
        held = paid - refunded - released
        balance = balance if account is not None else 0
        if balance != held:
            problems.append(f"{tid} ({status}): escrow balance {balance} != paid {paid} - refunded {refunded}"
                            f" - released {released} = {held}")
        if account is not None and (dpend or cpend):
            problems.append(f"{tid}: escrow account has pending amounts {dpend}/{cpend}")
        if status in ("TRADE_FINISHED", "TRADE_CLOSED") and held != 0:
            problems.append(f"{tid} ({status}): still holds {held}")
        if account is None:  # the escrow account opens with the trade (a run starts on a fresh database)
            problems.append(f"{tid} ({status}): has no escrow account")
        if status == "WAIT_BUYER_PAY" and (paid or balance):
            problems.append(f"{tid}: unpaid but paid_amount {paid}, escrow balance {balance}")
        if status == "WAIT_BUYER_CONFIRM_GOODS" and not shipped:
            problems.append(f"{tid}: waits for the buyer's confirmation but was never shipped")
        if status in ("WAIT_SELLER_SEND_GOODS", "WAIT_BUYER_CONFIRM_GOODS") and paid != amount + shipping:
            problems.append(f"{tid} ({status}): paid {paid} != amount + shipping {amount + shipping}")
        if status == "TRADE_FINISHED" and released == 0:
            problems.append(f"{tid}: finished without releasing anything")
        if fee > released:
            problems.append(f"{tid}: fee {fee} above released {released}")
        if status == "TRADE_CLOSED" and reason == "refunded" and refunded != paid:
            problems.append(f"{tid}: closed as refunded but refunded {refunded} of {paid}")
    # Escrow accounts that belong to no trade would be money held for nothing.
    strays = stack.query("""
        SELECT a.id, a.credits_posted - a.debits_posted FROM ledger_accounts AS a
        LEFT JOIN trades AS t ON t.escrow_account_id = a.id WHERE a.kind = 'escrow' AND t.id IS NULL""")
    problems += [f"escrow account {aid} belongs to no trade (balance {bal})" for aid, bal in strays]
    return len(rows), problems, by_status


def timeline_problems(stack: Stack) -> tuple[int, list[str]]:
    """Recompute every trade's hash-chained timeline (what ``flask escrow verify`` does, in one process)."""
    from app import create_app
    from core.db import db
    from wallet import timeline
    from wallet.escrow_models import Trade

    app = create_app({"DATABASE_URL": stack.database_url, "WALLET_ENV": "test"})
    problems = []
    with app.app_context():
        trades = list(db.session.scalars(db.select(Trade)))
        for trade in trades:
            result = timeline.verify(trade)
            if not result.intact:
                problems.append(f"{trade.id}: timeline broken at {result.broken_at}: {result.problem}")
        db.session.rollback()
        db.engine.dispose()
    return len(trades), problems


@dataclass
class AlertFigures:
    alerts: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    console_lines: int = 0
    torn_lines: int = 0
    delivered_once: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)  # alert id -> extra copies
    over_bound: list[str] = field(default_factory=list)  # duplicates beyond resends_in_doubt
    unmatched_lines: int = 0
    resends_in_doubt: int = 0

    @property
    def duplicates(self) -> int:
        return sum(self.duplicated.values())


def outbox_counts(stack: Stack) -> Counter[str]:
    """Alerts by status; the messages of events no dispatcher has expanded yet count as ``pending``."""
    counts = Counter(dict(stack.query("SELECT status, count(*) FROM alerts GROUP BY status")))
    [(unexpanded,)] = stack.query("SELECT coalesce(sum(message_count), 0) FROM alert_events")
    if unexpanded:
        counts["pending"] += int(unexpanded)
    return counts


def wait_outbox_drained(stack: Stack, timeout: float) -> Counter[str]:
    """Poll until no alert is pending or sending (the dispatchers delivered everything committed)."""
    def drained() -> Counter[str] | None:
        counts = outbox_counts(stack)
        return None if counts.get("pending") or counts.get("sending") else counts

    try:
        return poll(drained, timeout, "the outbox to drain", interval=0.25)
    except TimeoutError as exc:
        stuck = stack.query("SELECT id, event, status, attempts, next_attempt_at, in_flight_since, last_error"
                            " FROM alerts WHERE status IN ('pending', 'sending') ORDER BY created_at LIMIT 10")
        raise AssertionError(f"{exc}: {dict(outbox_counts(stack))}\n" + "\n".join(map(str, stuck))) from exc


def alert_figures(stack: Stack) -> AlertFigures:
    """Match every alert of the outbox with the console file on (to, event, created_at, body); the body of a
    one-time code is redacted in the database after sending, so those match on the first three."""
    from notifications.models import REDACTED

    figures = AlertFigures()
    rows = stack.query("SELECT id, to_phone, event, created_at, body, status, resends_in_doubt FROM alerts")
    messages, figures.torn_lines = stack.console_lines()
    figures.console_lines = len(messages)
    copies: Counter[tuple[str, str, str]] = Counter()
    bodies: dict[tuple[str, str, str], Counter[str]] = {}
    for message in messages:
        key = (message["to"], message["event"], message["created_at"])
        copies[key] += 1
        bodies.setdefault(key, Counter())[message["body"]] += 1
    claimed: Counter[tuple[str, str, str]] = Counter()
    keys: Counter[tuple[str, str, str]] = Counter()
    for _id, to, event, created_at, _body, _status, _doubt in rows:
        keys[(to, event, created_at.replace(tzinfo=UTC).isoformat())] += 1
    for alert_id, to, event, created_at, body, status, doubt in rows:
        figures.alerts += 1
        figures.by_status[status] += 1
        figures.resends_in_doubt += doubt
        key = (to, event, created_at.replace(tzinfo=UTC).isoformat())
        seen = copies.get(key, 0) if body == REDACTED else bodies.get(key, Counter()).get(body, 0)
        if keys[key] > 1:  # two alerts alike in every matched field: share the copies out
            seen = seen // keys[key]
        claimed[key] += seen
        if seen == 0:
            figures.missing.append(f"{alert_id} {event} to {to} ({status})")
            continue
        if seen == 1:
            figures.delivered_once += 1
        else:
            figures.duplicated[alert_id] = seen - 1
            if seen - 1 > doubt:
                figures.over_bound.append(f"{alert_id} {event}: {seen} copies, resends_in_doubt {doubt}")
    figures.unmatched_lines = sum(max(0, n - claimed.get(key, 0)) for key, n in copies.items())
    return figures


def ledger_check(stack: Stack) -> tuple[bool, str]:
    result = stack.flask("wallet", "check")
    return result.returncode == 0, (result.stdout + result.stderr).strip()


@contextlib.contextmanager
def running_stack(workdir: Path, **kwargs: Any) -> Iterator[Stack]:
    with Stack(workdir, **kwargs) as stack:
        yield stack


# --- what the answers promised, against the database -------------------------------------------------------------

_RANK = {"WAIT_BUYER_PAY": 0, "WAIT_SELLER_SEND_GOODS": 1, "WAIT_BUYER_CONFIRM_GOODS": 2, "TRADE_FINISHED": 3,
         "TRADE_CLOSED": 3}


def wait_withdrawals_settled(stack: Stack, timeout: float) -> Counter[str]:
    def settled() -> Counter[str] | None:
        counts = Counter(dict(stack.query("SELECT status, count(*) FROM withdrawals GROUP BY status")))
        return None if counts.get("pending") or counts.get("submitted") else counts or Counter({"none": 0})

    return poll(settled, timeout, "every withdrawal to settle", interval=0.25)


def books_problems(stack: Stack, books: Any) -> tuple[Counter[str], list[str]]:
    """Every 2xx answer is in the database, exactly once, and every account ends with the balance the answers
    add up to. Returns (checks made by kind, problems)."""
    checks: Counter[str] = Counter()
    problems: list[str] = []
    uncertain = bool(books.uncertain)

    users = dict(stack.query("SELECT id, phone FROM users"))
    for user in books.users.values():
        checks["2xx registration has its user"] += 1
        if users.get(user.id) != user.phone:
            problems.append(f"registered user {user.id} {user.phone} missing (found {users.get(user.id)})")
    if len(users) != len(books.users):
        problems.append(f"{len(users)} users in the database, {len(books.users)} registered by the client")

    transfers = {tid: (kind, amount, debit, credit) for tid, kind, amount, debit, credit in stack.query(
        "SELECT id, kind, amount, debit_account_id, credit_account_id FROM transfers")}
    wallets = {owner: aid for aid, owner in stack.query("SELECT id, owner FROM ledger_accounts WHERE kind = 'wallet'")}
    for tid, payer, payee, amount in books.transfers:
        checks["2xx transfer is posted"] += 1
        found = transfers.get(tid)
        if found != ("payment", amount, wallets.get(payer), wallets.get(payee)):
            problems.append(f"transfer {tid} ({amount} {payer}->{payee}) answered 2xx but the books have {found}")
    payments = sum(1 for kind, *_ in transfers.values() if kind == "payment")
    if payments != len(books.transfers) and not uncertain:
        problems.append(f"{payments} payment transfers posted, {len(books.transfers)} answered 2xx")

    topups = {tid: (user, amount, status, transfer) for tid, user, amount, status, transfer in stack.query(
        "SELECT id, user_id, amount, status, transfer_id FROM topups WHERE request_key IS NULL")}
    # Trades paid "with card": the shortfall was topped up inside the request, under the request's key.
    by_request = {key: (tid, user, amount, status) for tid, user, amount, status, key in stack.query(
        "SELECT id, user_id, amount, status, request_key FROM topups WHERE request_key IS NOT NULL")}
    expected_balance = Counter(books.balance)
    for user, key in books.card_pays:
        found = by_request.pop(key, None)
        if found is not None:
            checks["2xx card payment's top-up succeeded"] += 1
            if found[1:] != (user, found[2], "succeeded"):
                problems.append(f"top-up {found[0]} for a 2xx card payment is {found[3]}")
            expected_balance[user] += found[2]
    for tid, user, amount, status in by_request.values():
        if status == "succeeded":  # a top-up for a payment that never answered 2xx: money is in the wallet
            problems.append(f"top-up {tid} ({amount}, {status}) for {user} belongs to no 2xx payment")
    for tid, user, amount in books.topups:
        checks["2xx top-up succeeded and is posted"] += 1
        found = topups.get(tid)
        if found is None or found[:3] != (user, amount, "succeeded") or transfers.get(found[3], ("",))[0] != "topup":
            problems.append(f"top-up {tid} ({amount} for {user}) answered 2xx but the books have {found}")
    succeeded = sum(1 for t in topups.values() if t[2] == "succeeded")
    if succeeded != len(books.topups) and not uncertain:
        problems.append(f"{succeeded} top-ups succeeded, {len(books.topups)} answered 2xx")

    withdrawals = {wid: (user, amount, status) for wid, user, amount, status in stack.query(
        "SELECT id, user_id, amount, status FROM withdrawals")}
    for wid, user, amount in books.withdrawals:
        checks["2xx withdrawal paid out"] += 1
        if withdrawals.get(wid) != (user, amount, "succeeded"):
            problems.append(f"withdrawal {wid} ({amount} for {user}) answered 2xx but is {withdrawals.get(wid)}")
    if len(withdrawals) != len(books.withdrawals) and not uncertain:
        problems.append(f"{len(withdrawals)} withdrawals recorded, {len(books.withdrawals)} answered 2xx")

    trades = {row[0]: row for row in stack.query(
        "SELECT id, status, paid_amount, refunded_amount, released_amount, shipped_at IS NOT NULL, buyer_id,"
        " seller_id FROM trades")}
    refunds = {rid: (tid, amount, status) for rid, tid, amount, status in stack.query(
        "SELECT id, trade_id, amount, status FROM refunds")}
    for tid, known in books.trades.items():
        checks["2xx trade step reached"] += len(known.steps)
        row = trades.get(tid)
        if row is None:
            problems.append(f"trade {tid} answered 201 but does not exist")
            continue
        _id, status, paid, refunded, _released, shipped, buyer, seller = row
        if (buyer, seller) != (known.buyer, known.seller):
            problems.append(f"trade {tid}: parties {buyer}/{seller}, opened as {known.buyer}/{known.seller}")
        if "pay" in known.steps and paid != known.total:
            problems.append(f"trade {tid}: pay answered 200 but paid_amount is {paid} of {known.total}")
        if "ship" in known.steps and not shipped:
            problems.append(f"trade {tid}: ship answered 200 but it is not shipped")
        if "confirm" in known.steps and status != "TRADE_FINISHED":
            problems.append(f"trade {tid}: confirm answered 200 but it is {status}")
        for rid, amount in known.refunds.items():
            checks["2xx refund paid back"] += 1
            if refunds.get(rid) != (tid, amount, "REFUND_SUCCESS"):
                problems.append(f"refund {rid} of {tid} agreed with 200 but is {refunds.get(rid)}")
        for rid in known.requested_refunds:
            if rid not in refunds:
                problems.append(f"refund {rid} of {tid} answered 201 but does not exist")
        if not known.in_doubt:
            if status != known.expected_status:
                problems.append(f"trade {tid}: {status}, the last 2xx step left it {known.expected_status}")
            if refunded != sum(known.refunds.values()):
                problems.append(f"trade {tid}: refunded {refunded}, agreed refunds {sum(known.refunds.values())}")
        elif _RANK[status] < _RANK[known.expected_status]:
            problems.append(f"trade {tid}: {status} is behind its last 2xx step ({known.expected_status})")
    # Opening a trade takes no Idempotency-Key: a resend after a lost answer may open a second, unpaid trade
    # with the same title. Those are counted (and must hold nothing: trade_problems); any other is a problem.
    duplicates = 0
    for tid, title, status, paid in stack.query("SELECT id, title, status, paid_amount FROM trades"):
        if tid in books.trades:
            continue
        if books.titles.get(title) and status == "WAIT_BUYER_PAY" and paid == 0:
            duplicates += 1
        else:
            problems.append(f"trade {tid} ({title}, {status}) was never opened with a 2xx")
    checks["trades opened twice by a resent POST /trades (unpaid)"] += duplicates
    if len(trades) != len(books.trades) + duplicates and not uncertain:
        problems.append(f"{len(trades)} trades in the database, {len(books.trades)} opened with a 2xx")

    balances = {owner: (posted, pending) for owner, posted, pending in stack.query(
        "SELECT owner, credits_posted - debits_posted, debits_pending FROM ledger_accounts WHERE kind = 'wallet'")}
    for user_id in books.users:
        if user_id in books.uncertain:
            continue
        checks["balance equals what the 2xx answers add up to"] += 1
        posted, pending = balances.get(user_id, (0, 0))
        if (posted, pending) != (expected_balance[user_id], 0):
            problems.append(f"user {user_id}: balance {posted} (pending {pending}), the answers add up to"
                            f" {expected_balance[user_id]}")
    return checks, problems


def outbox_problems(stack: Stack) -> tuple[Counter[str], list[str]]:
    """Every committed money movement has its alert in the outbox (DESIGN 3), counted per account."""
    checks: Counter[str] = Counter()
    problems: list[str] = []
    alerts: Counter[tuple[str, str]] = Counter({(u, e): n for u, e, n in stack.query(
        "SELECT user_id, event, count(*) FROM alerts WHERE user_id IS NOT NULL GROUP BY user_id, event")})
    expected: Counter[tuple[str, str]] = Counter()
    for user, n in stack.query("SELECT user_id, count(*) FROM topups WHERE status = 'succeeded' GROUP BY user_id"):
        expected[(user, "topup_credited")] += n
    for user, n in stack.query("SELECT user_id, count(*) FROM withdrawals GROUP BY user_id"):
        expected[(user, "withdrawal_requested")] += n
    for user, n in stack.query("SELECT user_id, count(*) FROM withdrawals WHERE status = 'succeeded'"
                               " GROUP BY user_id"):
        expected[(user, "withdrawal_completed")] += n
    for side, event in (("debit", "balance_payment"), ("credit", "transfer_received")):
        for user, n in stack.query(
                f"SELECT a.owner, count(*) FROM transfers AS t JOIN ledger_accounts AS a ON a.id = t.{side}_account_id"
                " WHERE t.kind = 'payment' GROUP BY a.owner"):
            expected[(user, event)] += n
    for buyer, seller, paid, finished, refunds in stack.query(
            "SELECT buyer_id, seller_id, paid_at IS NOT NULL, status = 'TRADE_FINISHED',"
            " (SELECT count(*) FROM refunds AS r WHERE r.trade_id = t.id AND r.status = 'REFUND_SUCCESS')"
            " FROM trades AS t"):
        if paid:
            expected[(buyer, "balance_payment")] += 1
            expected[(seller, "trade_paid_ship_now")] += 1
        if finished:
            expected[(buyer, "trade_finished")] += 1
            expected[(seller, "trade_finished")] += 1
        expected[(buyer, "refund_completed")] += refunds
    for key, n in sorted(expected.items()):
        checks["money movement has its alert"] += n
        if alerts.get(key, 0) != n:
            problems.append(f"user {key[0]}: {alerts.get(key, 0)} {key[1]} alerts for {n} movements")
    return checks, problems


class Phases:
    """Wall-clock seconds per phase of a suite, for its figures."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._began: dict[str, float] = {}

    def begin(self, name: str) -> None:
        self._began[name] = time.monotonic()

    def end(self, name: str) -> None:
        if name in self._began and name not in self.seconds:
            self.seconds[name] = round(time.monotonic() - self._began[name], 1)

    lap = end

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)


def periodic_ledger_checks(stack: Stack) -> tuple[Counter[str], list[str]]:
    """The ledger checks ``flask worker`` ran while the load was on (every LEDGER_CHECK_SECONDS): how many,
    and the problems of any that was not clean (a snapshot that saw half of a movement would show here)."""
    counts: Counter[str] = Counter()
    problems = []
    for source, ok, text in stack.query("SELECT source, ok, problems FROM ledger_checks ORDER BY id"):
        counts[f"{source} {'clean' if ok else 'FAILED'}"] += 1
        if not ok:
            problems.append(text[:2000])
    return counts, problems


@dataclass
class EndChecks:
    """What both e2e suites check once the load has drained: the books, the trades and their timelines, the
    outbox, the alerts and the process logs."""

    periodic: Counter[str]
    periodic_problems: list[str]
    clean: bool
    check_output: str
    trades_checked: int
    trade_problems: list[str]
    by_status: Counter[str]
    timelines: int
    timeline_problems: list[str]
    book_checks: Counter[str]
    book_problems: list[str]
    outbox_checks: Counter[str]
    outbox_problems: list[str]
    alerts: AlertFigures
    status: str
    log_problems: list[str]

    def invariant_figures(self) -> dict[str, Any]:
        return {
            "wallet check": "clean" if self.clean else "FAILED",
            "ledger checks by the workers during the load": dict(self.periodic),
            "trades (escrow balance = paid - refunded - released)": self.trades_checked,
            "timelines intact": self.timelines,
            **self.book_checks, **self.outbox_checks,
        }

    def assert_books_hold(self) -> None:
        """The assertions both suites share; each adds its own (duplicates, kills, instances) after these."""
        assert self.clean, self.check_output
        assert not self.periodic_problems, "\n".join(self.periodic_problems[:5])
        assert not self.trade_problems, "\n".join(self.trade_problems[:30])
        assert not self.timeline_problems, "\n".join(self.timeline_problems[:30])
        assert not self.book_problems, "\n".join(self.book_problems[:30])
        assert not self.outbox_problems, "\n".join(self.outbox_problems[:30])
        assert set(self.alerts.by_status) == {"sent"}, dict(self.alerts.by_status)
        assert not self.alerts.missing, self.alerts.missing[:30]
        assert self.alerts.unmatched_lines == 0 and self.alerts.torn_lines == 0
        assert not self.log_problems, "\n".join(self.log_problems[:30])


def end_checks(stack: Stack, books: Any, log_expected: str | None = None) -> EndChecks:
    """Run every end-of-run check against the stack; ``log_expected`` matches log errors that are the test's own
    doing (the crash suite's kills)."""
    periodic, periodic_problems = periodic_ledger_checks(stack)
    clean, check_output = ledger_check(stack)
    trades_checked, trade_problems_found, by_status = trade_problems(stack)
    timelines, timeline_problems_found = timeline_problems(stack)
    book_checks, book_problems = books_problems(stack, books)
    outbox_checks, outbox_problems_found = outbox_problems(stack)
    return EndChecks(periodic, periodic_problems, clean, check_output, trades_checked, trade_problems_found,
                     by_status, timelines, timeline_problems_found, book_checks, book_problems, outbox_checks,
                     outbox_problems_found, alert_figures(stack), stack.flask("notifications", "status").stdout,
                     stack.log_problems(expected=log_expected))
