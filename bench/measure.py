"""What the benchmarks share: a fresh PostgreSQL database, and running a unit of work in worker processes (as
gunicorn's sync workers run requests) for a while, measuring its rate and its CPU cost, in the workers and in the
PostgreSQL backends serving them."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def paired_in_processes(workers: int, seconds: float, setup: Callable[[int], Callable[[str], Callable[[], object]]],
                        admin: Engine, variants: list[str], block: float = 0.4) -> dict[str, dict[str, float]]:
    """Compare variants of a unit of work in short alternating blocks (A B, then B A, repeated until each variant
    has had ``seconds``), so that a machine speeding up or slowing down during the run touches every variant alike.
    Each worker is a forked process that lives through the whole run, as gunicorn's sync workers do (threads of one
    process would also wait for each other's GIL). ``setup(i)`` runs in worker ``i`` after the fork and returns
    ``unit_of(variant)``: the unit of work for a variant name, which runs once to warm up before the first block.
    The caller must hold no open database connection across the fork.

    Returns, per variant: ``rate`` (units per second) and ``cpu`` (CPU seconds per unit, the workers plus the
    database backends) over all its blocks, and, against the first variant block pair by block pair, the
    median ratio of rates (``rate_vs``) and of CPU per unit (``cpu_vs``) with their interquartile ranges
    (``*_low``, ``*_high``): how much the machine's noise moved the comparison."""
    ctx = mp.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(workers)]
    procs = [ctx.Process(target=_paired_worker, args=(i, setup, variants, child)) for i, (_, child) in
             enumerate(pipes)]
    for p in procs:
        p.start()
    try:
        for parent, _ in pipes:
            if parent.recv() != "ready":
                raise RuntimeError("a benchmark worker failed to start")

        def run_block(name: str) -> tuple[int, float, float]:
            server_before = server_cpu(admin)
            start = time.time() + 0.02
            for parent, _ in pipes:
                parent.send((name, start, block))
            done = [parent.recv() for parent, _ in pipes]
            server = sum(used - server_before.get(pid, 0.0) for pid, used in server_cpu(admin).items())
            units = sum(n for n, _, _ in done)
            # the workers' summed rate over their own windows, as one elapsed time for ``units``
            rate = sum(n / elapsed for n, elapsed, _ in done)
            return max(units, 1), max(units, 1) / rate if rate else block, sum(c for _, _, c in done) + server

        return _alternate(variants, seconds, block, run_block)
    finally:
        for parent, _ in pipes:
            parent.send(None)
        for p in procs:
            p.join()


def _paired_worker(i: int, setup: Callable[[int], Callable[[str], Callable[[], object]]], variants: list[str],
                   conn: Any) -> None:
    unit_of = setup(i)
    units = {name: unit_of(name) for name in variants}
    for unit in units.values():
        unit()
    conn.send("ready")
    while (order := conn.recv()) is not None:
        name, start, seconds = order
        unit = units[name]
        while time.time() < start:
            time.sleep(0.0005)
        stop, count, cpu = start + seconds, 0, time.process_time()
        while time.time() < stop:
            unit()
            count += 1
        conn.send((count, time.time() - start, time.process_time() - cpu))


def _alternate(names: list[str], seconds: float, block: float,
               run_block: Callable[[str], tuple[int, float, float]]) -> dict[str, dict[str, float]]:
    """Blocks of each variant in turn (A B, B A, ...) and the figures ``paired_in_processes`` returns;
    ``run_block(name)`` runs one block and gives units, wall seconds and CPU seconds."""
    totals = {name: [0, 0.0, 0.0] for name in names}  # units, wall seconds, CPU seconds
    ratios: dict[str, dict[str, list[float]]] = {name: {"rate_vs": [], "cpu_vs": []} for name in names}
    for n in range(2 * max(1, round(seconds / block / 2))):
        here = {}
        for name in names if n % 2 == 0 else reversed(names):
            units, elapsed, cpu = run_block(name)
            totals[name][0] += units
            totals[name][1] += elapsed
            totals[name][2] += cpu
            here[name] = (units / elapsed, cpu / units)
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


def rate_in_processes(workers: int, seconds: float, setup: Callable[[int], Callable[[], object]],
                      admin: Engine) -> tuple[float, float, float, float]:
    """Run a unit of work in ``workers`` forked processes for ``seconds``, as gunicorn's sync workers serve
    requests: no worker waits for another's GIL. ``setup(i)`` runs in worker ``i`` after the fork (it opens what
    the work needs: an app, its connections) and returns the unit of work, which runs once to warm up before the
    clock starts. A unit may carry ``part_cpu``, a function giving the CPU seconds one part of it has used so far
    (counted by the unit itself).
    Returns units per second (the sum of the workers' rates), the workers' CPU seconds per unit, the database
    backends' CPU seconds per unit and that part's CPU seconds per unit (0 without ``part_cpu``). The caller must
    hold no open database connection across the fork."""
    ctx = mp.get_context("fork")
    results: Any = ctx.Queue()
    set_up, measured = ctx.Barrier(workers + 1), ctx.Barrier(workers + 1)
    start = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_worker, args=(i, seconds, setup, set_up, measured, start, results))
             for i in range(workers)]
    for p in procs:
        p.start()
    set_up.wait()  # every worker is ready, its backend connected: count the backends' CPU from here
    server_before = server_cpu(admin)
    start.value = time.time() + 0.05
    done = [results.get() for _ in procs]
    server = sum(used - server_before.get(pid, 0.0) for pid, used in server_cpu(admin).items())
    measured.wait()  # only now may the workers (and with them their backends) go
    for p in procs:
        p.join()
    units = max(sum(n for n, *_ in done), 1)
    # each worker's own rate over its own window (its last unit may end a little after ``seconds``)
    return (sum(n / elapsed for n, elapsed, *_ in done), sum(cpu for _, _, cpu, _ in done) / units, server / units,
            sum(part for *_, part in done) / units)


def _worker(i: int, seconds: float, setup: Callable[[int], Callable[[], object]], set_up: Any, measured: Any,
            start: Any, results: Any) -> None:
    work = setup(i)
    work()
    part_cpu = getattr(work, "part_cpu", lambda: 0.0)
    set_up.wait()
    while not start.value:
        time.sleep(0.0005)
    while time.time() < start.value:
        time.sleep(0.0005)
    stop, count, cpu, part = start.value + seconds, 0, time.process_time(), part_cpu()
    while time.time() < stop:
        work()
        count += 1
    results.put((count, time.time() - start.value, time.process_time() - cpu, part_cpu() - part))
    measured.wait()
