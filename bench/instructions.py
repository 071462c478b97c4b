"""Instructions per request of the read endpoints, next to a bare Flask JSON endpoint, counted by valgrind's
callgrind: a figure that does not move with the machine's load or speed, for judging a change to the read path.

``bench/http.py`` gives the rates the targets are set on (gunicorn, PostgreSQL, real clients), but its ratios move
by a tenth from run to run and from machine to machine. This counts what one request costs our process, in-process
as a WSGI call (no gunicorn, no network client, no database server: those are not counted), so two commits can be
compared on the same machine, or on any other, to the percent.

Each endpoint is run in a child process under callgrind twice, with ``--requests`` and three times as many requests;
the difference of the two totals divided by the difference of the counts is the cost of one request (start-up and
imports, counted in both, drop out). Every child imports the application, the bare one too, so that the garbage
collector, whose passes are counted, works on heaps of one size; it freezes what start-up left on the heap
(``gc.freeze``) and runs with ``PYTHONHASHSEED=0``. Without those two, a full collection falling within one run
and not the other moved a count by up to a tenth (the bare endpoint counted 334 k to 378 k in five runs of two
commits that differ off its path, the statement page 1.66 M and 1.75 M in two runs of one); with them, two runs
at once agreed to the instruction on the bare endpoint and to 67 instructions on the statement page, and a third,
twenty minutes later, to 0.1 % on the statement page and 2.6 % on the bare endpoint. Keep ``--requests`` at 100
or more.
The database (``--database-url``, recreated) holds two verified users with a top-up, 25 transfers and a trade, made
through the API.

    .venv/bin/python bench/instructions.py                         # bare, wallet, statement, trade (5-10 minutes)
    .venv/bin/python bench/instructions.py --only statement         # bare and the statement page

Needs valgrind (``apt-get install valgrind``). The ratio printed is the bare endpoint's count over the endpoint's:
the share of a bare endpoint's rate the endpoint would reach if the CPU of our process were all there was.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The repository root first, and never this folder: bench/http.py would shadow the standard library's http.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_instructions"
ENDPOINTS = ("wallet", "statement", "trade")


def _config(url: str, sms_file: str) -> dict[str, object]:
    # Tokens that outlive the run under valgrind, which is some fifty times slower than the machine.
    return {"DATABASE_URL": url, "WALLET_ENV": "test", "RATELIMIT_ENABLED": False, "SMS_CONSOLE_FILE": sms_file,
            "LOG_LEVEL": "WARNING", "ACCESS_TOKEN_MINUTES": 600, "LIMIT_PAYMENTS_PER_PAYEE_DAILY": 100}


def set_up(url: str, state_file: Path) -> None:
    """The database and a caller's token, and the paths to read, written to ``state_file`` for the children."""
    from flask_migrate import upgrade

    from app import create_app
    from bench.measure import fresh_database
    from bench.profile_read import a_reader

    fresh_database(url)
    app = create_app(_config(url, str(state_file.with_name("sms.jsonl"))))
    with app.app_context():
        upgrade()
    alice, paths = a_reader(app)
    state_file.write_text(json.dumps({"url": url, "headers": alice["headers"], "paths": {"bare": "/json", **paths}}))


def child(state_file: Path, endpoint: str, requests: int) -> None:
    """Serve ``requests`` requests to ``endpoint`` as WSGI calls (run under callgrind by ``count``)."""
    from werkzeug.test import EnvironBuilder

    from bench.profile_read import bare_app

    state = json.loads(state_file.read_text())
    if endpoint == "bare":
        app, headers = bare_app(), {}
    else:
        from app import create_app

        app = create_app(_config(state["url"], str(state_file.with_name("sms.jsonl"))))
        headers = state["headers"]
    environ = EnvironBuilder(path=state["paths"][endpoint], headers=headers).get_environ()

    def start_response(status: str, _headers: object, _exc_info: object = None) -> None:
        if not status.startswith("200"):
            raise SystemExit(f"{endpoint}: {status}")

    # What start-up left on the heap (the imports, the app) is never garbage, but a full collection scans it: one
    # falling within the larger run and not the smaller moved a count by a tenth. Frozen, it is never scanned.
    gc.collect()
    gc.freeze()
    for _ in range(requests):
        body = app(dict(environ), start_response)
        b"".join(body)
        body.close()  # type: ignore[attr-defined]


def count(state_file: Path, endpoint: str, requests: int) -> int:
    """Instructions callgrind counts for a child serving ``requests`` requests to ``endpoint``."""
    out = state_file.with_name(f"callgrind.{endpoint}.{requests}")
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                          "--child", str(state_file), endpoint, str(requests)],
                         capture_output=True, text=True, cwd=ROOT, check=False,
                         env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict and set layouts every run
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"{endpoint}: callgrind failed ({run.returncode}):\n{run.stderr[-2000:]}")
    out.unlink(missing_ok=True)
    return int(found[1])


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--requests", type=int, default=100, help="the smaller run's count (the larger: three times)")
    parser.add_argument("--only", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if args.requests < 1:
        raise SystemExit("--requests must be 1 or more")

    work = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    try:
        state_file = work / "state.json"
        set_up(args.database_url, state_file)
        few, many = args.requests, 3 * args.requests
        print(f"instructions per request, in-process WSGI calls under callgrind ({few} and {many} requests)")
        print(f"{'endpoint':<12} {'instructions':>14} {'bare / this':>12}")
        per_request = {}
        for endpoint in ("bare", *args.only):
            per_request[endpoint] = (count(state_file, endpoint, many) - count(state_file, endpoint, few)) / (
                many - few)
            ratio = per_request["bare"] / per_request[endpoint]
            print(f"{endpoint:<12} {per_request[endpoint]:>14,.0f} {ratio:>12.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
