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
    units, elapsed, cpu, server = _run(workers, seconds, work, admin)
    return units / elapsed, cpu / units, server / units


def _run(workers: int, seconds: float, work: Callable[[int], object], admin: Engine) -> tuple[int, float, float, float]:
    """Units done, wall seconds, this process's CPU seconds and the database backends' CPU seconds."""
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
    return max(sum(done), 1), elapsed, cpu, server


def paired(workers: int, seconds: float, work: Callable[[int], object], admin: Engine,
           variants: dict[str, Callable[[], object]], block: float = 0.4) -> dict[str, dict[str, float]]:
    """Compare variants of ``work`` in short alternating blocks (A B, then B A, repeated until each variant has
    had ``seconds``), so that a machine speeding up or slowing down during the run touches every variant alike.
    ``variants`` maps a name to a function that switches ``work`` to that variant.

    Returns, per variant: ``rate`` (units per second) and ``cpu`` (CPU seconds per unit, this process plus the
    database backends) over all its blocks, and, against the first variant block pair by block pair, the
    median ratio of rates (``rate_vs``) and of CPU per unit (``cpu_vs``) with their interquartile ranges
    (``*_low``, ``*_high``): how much the machine's noise moved the comparison."""
    names = list(variants)
    totals = {name: [0, 0.0, 0.0] for name in names}  # units, wall seconds, CPU seconds
    ratios: dict[str, dict[str, list[float]]] = {name: {"rate_vs": [], "cpu_vs": []} for name in names}
    for n in range(2 * max(1, round(seconds / block / 2))):
        here = {}
        for name in names if n % 2 == 0 else reversed(names):
            variants[name]()
            units, elapsed, cpu, server = _run(workers, block, work, admin)
            totals[name][0] += units
            totals[name][1] += elapsed
            totals[name][2] += cpu + server
            here[name] = (units / elapsed, (cpu + server) / units)
        for name in names:
            ratios[name]["rate_vs"].append(here[name][0] / here[names[0]][0])
            ratios[name]["cpu_vs"].append(here[name][1] / here[names[0]][1])
    result = {}
    for name in names:
        units, elapsed, cpu = totals[name]
        figures = {"rate": units / elapsed, "cpu": cpu / units}
        for kind, values in ratios[name].items():
            values.sort()
            n = len(values)
            figures |= {kind: values[n // 2], f"{kind}_low": values[n // 4], f"{kind}_high": values[(3 * n) // 4]}
        result[name] = figures
    return result
