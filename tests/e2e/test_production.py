"""The README's production section, run verbatim (ports, database and file names made unique) against the
local PostgreSQL and Redis: gunicorn, a dispatcher and a worker come up and answer."""

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from tests.e2e.server import ROOT, free_port

pytestmark = pytest.mark.e2e


def production_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- production:.*?-->\n```bash\n(.*?)```", readme, re.S)
    assert block, "the README lost its production block"
    return block.group(1)


def worker_started(log: str) -> bool:
    return '"level": "INFO"' in log or "background worker started" in log


def _postgres_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0


@pytest.mark.skipif(not _postgres_up(), reason="PostgreSQL is not running on 127.0.0.1:5432")
def test_the_production_section_works_as_written(tmp_path):
    port, database = free_port(), f"wallet_e2e_{uuid.uuid4().hex[:8]}"
    script = (production_block()
              .replace("127.0.0.1:8000", f"127.0.0.1:{port}")
              .replace("5432/wallet", f"5432/{database}")
              .replace("datname = 'wallet'", f"datname = '{database}'")
              .replace("CREATE DATABASE wallet", f"CREATE DATABASE {database}")
              .replace("/tmp/wallet-", f"{tmp_path}/wallet-")
              .replace("~/.wallet-pepper", f"{tmp_path}/wallet-pepper")
              .replace("~/.wallet-metrics-token", f"{tmp_path}/wallet-metrics-token"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WALLET_", "DATABASE_URL", "FLASK_"))}
    env["SMS_CONSOLE_FILE"] = str(tmp_path / "sms.jsonl")
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output
        assert '{"status":"ready"}' in output
        assert "wallet_outbox_oldest_unsent_seconds" in output
        worker_log, deadline = "", time.monotonic() + 60  # on a loaded machine the worker may start late
        while time.monotonic() < deadline and not worker_started(worker_log):
            time.sleep(0.5)
            worker_log = (tmp_path / "wallet-worker.log").read_text()
        assert worker_started(worker_log), worker_log
        # Every line of the web processes' log is a JSON object with a request id, gunicorn's own lines too.
        web_log = (tmp_path / "wallet-web.log").read_text().splitlines()
        lines = [json.loads(line) for line in web_log]
        assert all("request_id" in line for line in lines), web_log
        assert any(line["logger"] == "gunicorn.error" and line["msg"].startswith("Booting worker") for line in lines)
        assert any(line.get("path") == "/readyz" and line["request_id"] != "-" for line in lines), web_log
    finally:
        pid_file = tmp_path / "wallet-web.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the dispatcher and the worker started with '&'

        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                        f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False)
