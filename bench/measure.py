"""What the benchmarks share: a fresh PostgreSQL database, and running a unit of work in threads for a while,
measuring its rate and its CPU cost, in this process and in the PostgreSQL backends serving it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, text


def fresh_database(url: str) -> None:
    server, name = url.rsplit("/", 1)
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def server_cpu(admin: Engine) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend serving the benchmark's database (0 if the server is not
    on this machine: its processes are not in /proc)."""
    with admin.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                 " AND pid <> pg_backend_pid()")).scalars().all()
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return used


def rate(workers: int, seconds: float, work: Callable[[int], object], admin: Engine) -> tuple[float, float, float]:
    """Run ``work(i)`` in ``workers`` threads for ``seconds``. Returns units per second, this process's CPU seconds
    per unit (all its threads) and the database backends' CPU seconds per unit."""
    done = [0] * workers
    stop = time.perf_counter() + seconds
    barrier = threading.Barrier(workers + 1)

    def loop(i: int) -> None:
        barrier.wait()
        while time.perf_counter() < stop:
            work(i)
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    server_before = server_cpu(admin)
    started, cpu_started = time.perf_counter(), time.process_time()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    server = sum(used - server_before.get(pid, 0.0) for pid, used in server_cpu(admin).items())
    units = max(sum(done), 1)
    return units / elapsed, cpu / units, server / units
