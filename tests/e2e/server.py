"""Start the real service (``flask dev``) in a subprocess on a free port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevServer:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.sms_file = workdir / "instance" / "sms.jsonl"
        self.log = workdir / "server.log"
        self.env = {
            **os.environ,
            "FLASK_APP": "app",
            "DATABASE_URL": f"sqlite:///{workdir / 'wallet.db'}",
            "SMS_CONSOLE_FILE": str(self.sms_file),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DevServer:
        flask = Path(sys.executable).with_name("flask")
        self._log_handle = self.log.open("wb")
        self.process = subprocess.Popen(
            [str(flask), "dev", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self._log_handle, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_handle.close()
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not become ready:\n{self.log.read_text()}")

    def __exit__(self, *_exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_handle.close()
