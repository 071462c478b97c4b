"""HTTP throughput and latency through gunicorn on PostgreSQL, next to a bare Flask JSON endpoint served by
the same gunicorn settings, in the same run.

For each endpoint: requests per second at saturation (``--connections`` keep-alive clients for
``--seconds``, in ``--rounds`` blocks that alternate with blocks of the bare endpoint, so that a machine whose
speed drifts touches both alike; the ratio is the median over the block pairs), p50 and p99 latency there, p99
again at half that rate (open loop: the clients pace their requests, evenly spaced and interleaved, then as
random Poisson arrivals, the ``random`` column; latency counted from when a request was due), and where the
CPU of a request goes (the server under test, the database, the SMS dispatcher, the load generator; from
``/proc``). Read endpoints (wallet, a statement page, a trade) target >= 0.5x the bare rate and p99 <= 50 ms
at half the peak; a money endpoint (a transfer) is bounded by its argon2 payment-password check, so its rate is
also printed next to raw argon2 verifies per second, measured in the same run with as many processes as
gunicorn has workers.

    .venv/bin/python bench/http.py                        # database bench_http (recreated), 2 workers
    .venv/bin/python bench/http.py --workers 3 --connections 8 --seconds 8
    .venv/bin/python bench/http.py --socket /var/run/postgresql   # the server reaches PostgreSQL by its socket

The load generator runs in separate processes so it does not share the GIL with the measured servers; on a
2-core machine client and server compete for CPU, which affects the bare endpoint and ours alike.
"""

# ruff: noqa: E402 - the imports below need the repository root on sys.path first
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and this file (http.py) would shadow the
# standard library's http package: put the repository root there instead.
sys.path[0] = str(ROOT)

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid

from tests.factories_ids import make_card_number, make_id_number

BARE_APP = '''
from flask import Flask, jsonify
def create():
    app = Flask("bare")
    @app.get("/json")
    def hello():
        return jsonify(available=100, pending=0, currency="CNY")
    return app
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not start")


def request(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = json.dumps(body) if body is not None else None
    conn.request(method, path, payload, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data else None


def sms_code(sms_file: Path, phone: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sms_file.exists():
            for line in reversed(sms_file.read_text(encoding="utf-8").splitlines()):
                message = json.loads(line)
                if message["to"] == phone and message["event"] == "sms_code":
                    return re.search(r"(?<!\d)\d{6}(?!\d)", message["body"]).group()
        time.sleep(0.1)
    raise RuntimeError("no SMS code arrived")


def set_up_user(port: int, sms_file: Path, phone: str, name: str) -> dict:
    request(port, "POST", "/api/v1/sms-codes", {"phone": phone, "purpose": "register"})
    status, body = request(port, "POST", "/api/v1/users", {
        "phone": phone, "sms_code": sms_code(sms_file, phone), "login_password": "bench login phrase",
        "payment_password": "135790", "device_id": "bench"})
    assert status == 201, body
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    request(port, "POST", "/api/v1/me/identity", {"real_name": name, "id_number": make_id_number()}, auth)
    _, card = request(port, "POST", "/api/v1/me/bank-cards", {"card_number": make_card_number(), "holder_name": name,
                                                              "bank_code": "ICBC", "payment_password": "135790"}, auth)
    request(port, "POST", "/api/v1/topups",
            {"amount": 5_000_000, "bank_card_id": card["id"], "payment_password": "135790"},
            {**auth, "Idempotency-Key": uuid.uuid4().hex})
    return {"auth": auth, "phone": phone}


def client(port: int, method: str, path: str, body: dict | None, headers: dict, seconds: float, rate: float | None,
           out: mp.Queue, phase: float = 0.0, poisson: bool = False, seed: int = 0) -> None:
    """One keep-alive connection; closed loop, or paced at ``rate`` requests per second (open loop).

    Paced, the first request waits ``phase`` seconds, so that the clients of one load interleave instead of
    firing together; the gaps are equal, or with ``poisson`` drawn at random (exponential, mean 1 / rate, the
    first one too), and a latency is counted from the time the request was due, so a client that fell behind
    does not hide the wait (coordinated omission)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, errors = [], 0
    gaps = random.Random(seed)
    stop = time.perf_counter() + seconds
    next_at = time.perf_counter() + (gaps.expovariate(rate) if poisson and rate else phase)
    while time.perf_counter() < stop:
        due = time.perf_counter()
        if rate:
            delay = next_at - due
            if delay > 0:
                time.sleep(delay)
            due = next_at
            next_at += gaps.expovariate(rate) if poisson else 1 / rate
        send_headers = dict(headers)
        if "Idempotency-Key" in send_headers:
            send_headers["Idempotency-Key"] = uuid.uuid4().hex
        conn.request(method, path, json.dumps(body) if body else None, send_headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - due)
        errors += response.status >= 400
    out.put((latencies, errors, time.process_time()))


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes (those gone are left out)."""
    tick, used = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used += (int(fields[11]) + int(fields[12])) / tick
    return used


def group_pids(leader: int) -> list[int]:
    """The processes of ``leader``'s process group (a gunicorn master and its workers, say)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == leader:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (0 CPU counted if the server runs elsewhere)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU used by the server under test, the database and the SMS dispatcher while a load runs; per request."""

    def __init__(self, server: int, dispatcher: int) -> None:
        self.groups = {"server": server, "dispatcher": dispatcher}

    def __enter__(self) -> CpuMeter:
        self.pids = {name: group_pids(leader) for name, leader in self.groups.items()}
        self.pids["database"] = postgres_pids()
        self.before = {name: process_cpu(pids) for name, pids in self.pids.items()}
        return self

    def __exit__(self, *_exc: object) -> None:
        self.used = {name: process_cpu(pids) - self.before[name] for name, pids in self.pids.items()}


def load(port: int, method: str, path: str, body: dict | None, headers: dict, connections: int, seconds: float,
         rate: float | None = None, poisson: bool = False) -> tuple[float, float, float, int, float]:
    """Requests per second, p50 and p99 latency (ms), errors, and the clients' CPU seconds. With ``rate``, the
    clients together send that many requests per second: evenly spaced (client i starts i / rate seconds after
    the first), or with ``poisson`` as independent random arrivals."""
    out: mp.Queue = mp.Queue()
    per_client = rate / connections if rate else None
    procs = [mp.Process(target=client, args=(port, method, path, body, headers, seconds, per_client, out),
                        kwargs={"phase": i / rate if rate and not poisson else 0.0, "poisson": poisson, "seed": i})
             for i in range(connections)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(x for lat, _, _ in results for x in lat)
    errors = sum(e for _, e, _ in results)
    client_cpu = sum(cpu for _, _, cpu in results)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000, errors, client_cpu


def _verify_for(seconds: float, out: mp.Queue) -> None:
    from argon2 import PasswordHasher, Type

    hasher = PasswordHasher(time_cost=int(os.environ.get("ARGON2_TIME_COST", "2")),
                            memory_cost=int(os.environ.get("ARGON2_MEMORY_KIB", "19456")),
                            parallelism=int(os.environ.get("ARGON2_PARALLELISM", "1")), type=Type.ID)
    stored, count = hasher.hash("135790"), 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        hasher.verify(stored, "135790")
        count += 1
    out.put(count)


def argon2_rate(processes: int, seconds: float) -> float:
    """Raw argon2id verifies per second with the application's parameters, ``processes`` at once."""
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_verify_for, args=(seconds, out)) for _ in range(processes)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="bench_http")
    parser.add_argument("--socket", metavar="DIR", help="reach PostgreSQL through its Unix socket in DIR (e.g."
                        " /var/run/postgresql), as the README suggests when it runs on the same machine, instead of"
                        " TCP to 127.0.0.1:5432")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0, help="per endpoint (and as much again for bare)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks of bare and endpoint")
    parser.add_argument("--only", nargs="+", metavar="WORD",
                        help="measure only the endpoints whose name contains one of these words (e.g. transactions)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)"], check=True)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"CREATE DATABASE {args.database}"], check=True)
    (tmp / "bare_app.py").write_text(BARE_APP)
    env = {**os.environ, "WALLET_ENV": "production", "PASSWORD_PEPPER": "bench-" + uuid.uuid4().hex,
           "DATABASE_URL": (f"postgresql://postgres@/{args.database}?host={args.socket}" if args.socket
                            else f"postgresql://postgres@127.0.0.1:5432/{args.database}"), "RATELIMIT_ENABLED": "false",
           "SMS_CONSOLE_FILE": str(tmp / "sms.jsonl"), "LOG_LEVEL": "WARNING", "DISPATCH_INTERVAL_SECONDS": "0.1",
           "LIMIT_PAYMENTS_PER_PAYEE_DAILY": str(2**31 - 1),  # one payer pays one payee throughout
           "WEB_CONCURRENCY": str(args.workers), "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
    venv = Path(sys.executable).parent
    subprocess.run([str(venv / "flask"), "--app", "app", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    ours, bare = free_port(), free_port()
    servers = [
        subprocess.Popen([str(venv / "gunicorn"), "-c", "gunicorn.conf.py"], cwd=ROOT,
                         env={**env, "BIND": f"127.0.0.1:{ours}"}, start_new_session=True),
        subprocess.Popen([str(venv / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(tmp),
                          "bare_app:create()"], cwd=tmp, env={**env, "BIND": f"127.0.0.1:{bare}"},
                         start_new_session=True),
        subprocess.Popen([str(venv / "flask"), "--app", "app", "notifications", "dispatch"], cwd=ROOT, env=env,
                         start_new_session=True),
    ]
    try:
        wait_ready(ours, "/readyz")
        wait_ready(bare, "/json")
        alice = set_up_user(ours, tmp / "sms.jsonl", "+12025550177", "张三")
        bob = set_up_user(ours, tmp / "sms.jsonl", "+12125550177", "李四")
        for _ in range(30):
            request(ours, "POST", "/api/v1/transfers", {"to_phone": bob["phone"], "amount": 100,
                                                         "payment_password": "135790"},
                    {**alice["auth"], "Idempotency-Key": uuid.uuid4().hex})
        _, trade = request(ours, "POST", "/api/v1/trades", {"seller_phone": bob["phone"], "title": "bench",
                                                            "amount": 100}, alice["auth"])
        cases = [
            ("bare GET /json", bare, "GET", "/json", None, {}),  # against itself: shows the blocks' spread
            ("GET /api/v1/wallet", ours, "GET", "/api/v1/wallet", None, alice["auth"]),
            ("GET /api/v1/wallet/transactions", ours, "GET", "/api/v1/wallet/transactions?limit=20", None,
             alice["auth"]),
            ("GET /api/v1/trades/{id}", ours, "GET", f"/api/v1/trades/{trade['id']}", None, alice["auth"]),
            ("POST /api/v1/transfers", ours, "POST", "/api/v1/transfers",
             {"to_phone": bob["phone"], "amount": 1, "payment_password": "135790"},
             {**alice["auth"], "Content-Type": "application/json", "Idempotency-Key": "x"}),
        ]
        if args.only:
            cases = [case for case in cases if any(word in case[0] for word in args.only)]
        print(f"gunicorn workers={args.workers}, {args.connections} connections, {args.seconds:.0f} s per endpoint in "
              f"{args.rounds} blocks, each next to a block of the bare endpoint (x bare: median of the block pairs); "
              f"PostgreSQL by {'its socket in ' + args.socket if args.socket else 'TCP to 127.0.0.1:5432'}")
        print(f"{'endpoint':<34} {'req/s':>8} {'x bare':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99@half':>9} {'random':>7}"
              f" {'errors':>6}   cpu ms/request: {'server':>6} {'db':>5} {'sms':>5} {'client':>6}")
        block = args.seconds / args.rounds
        for name, port, method, path, body, headers in cases:
            rates, bare_rates, p50s, p99s, errors = [], [], [], [], 0
            used: dict[str, float] = {}
            client_cpu = done = 0.0
            for n in range(args.rounds):  # bare then endpoint, endpoint then bare, ...: drift touches both alike
                for which in (("bare", "case") if n % 2 == 0 else ("case", "bare")):
                    if which == "bare":
                        bare_rates.append(load(bare, "GET", "/json", None, {}, args.connections, block)[0])
                        continue
                    with CpuMeter(servers[0 if port == ours else 1].pid, servers[2].pid) as meter:
                        rate, p50, p99, failed, cpu_s = load(port, method, path, body, headers, args.connections,
                                                              block)
                    rates.append(rate)
                    p50s.append(p50)
                    p99s.append(p99)
                    errors += failed
                    client_cpu += cpu_s
                    done += rate * block
                    for key, value in meter.used.items():
                        used[key] = used.get(key, 0.0) + value
            rate = statistics.median(rates)
            ratio = statistics.median(r / b for r, b in zip(rates, bare_rates, strict=True))
            cpu = {key: 1000 * value / done for key, value in used.items()}
            _, _, p99_half, _, _ = load(port, method, path, body, headers, args.connections, args.seconds / 2,
                                        rate / 2)
            _, _, p99_random, _, _ = load(port, method, path, body, headers, args.connections, args.seconds / 2,
                                          rate / 2, poisson=True)
            print(f"{name:<34} {rate:>8.1f} {ratio:>7.2f} {statistics.median(p50s):>7.1f} "
                  f"{statistics.median(p99s):>7.1f} {p99_half:>9.1f} {p99_random:>7.1f} {errors:>6}            "
                  f"{cpu['server']:>6.3f} {cpu['database']:>5.3f} {cpu['dispatcher']:>5.3f} "
                  f"{1000 * client_cpu / done:>6.3f}")
            if method == "POST":
                verifies = argon2_rate(args.workers, args.seconds)
                print(f"{'  raw argon2 verifies/s':<34} {verifies:>8.1f}   the transfer rate is "
                      f"{rate / verifies:.2f} of this bound (one payment-password check per transfer)")
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                        f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)"], check=False)


if __name__ == "__main__":
    main()
