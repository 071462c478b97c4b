"""gunicorn settings for production: `.venv/bin/gunicorn -c gunicorn.conf.py` serves `app:create_app()`.

Every value can be overridden from the environment (``BIND``, ``WEB_CONCURRENCY``, ``GUNICORN_THREADS``,
``GUNICORN_TIMEOUT``). Prometheus metrics are collected across worker processes through
``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory unless you set one).
"""

import os
import shutil
import sys
import tempfile


def _whole(name: str, default: int, least: int) -> int:
    """A whole-number setting from the environment; one line naming it (not a traceback) when it is not one."""
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        sys.exit(f"Error: {name}={raw!r} is not a whole number")
    if value < least:
        sys.exit(f"Error: {name}={raw!r} must be {least} or more")
    return value


wsgi_app = "app:create_app()"
bind = os.environ.get("BIND", "127.0.0.1:8000").strip() or sys.exit("Error: BIND='' names no address (host:port)")
# WEB_CONCURRENCY is also read by gunicorn itself, before this file: a word there fails in gunicorn, not here.
workers = _whole("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1, 1)
threads = _whole("GUNICORN_THREADS", 1, 1)
timeout = _whole("GUNICORN_TIMEOUT", 30, 0)  # 0: no timeout (gunicorn's meaning)
graceful_timeout = 20
# The application logs one access line per request itself (with the request id); gunicorn's would repeat it.
accesslog = None
errorlog = "-"
# gunicorn's own lines in the application's format (JSON in production): core/gunicorn_logging.py, importable
# whatever directory gunicorn is started from or told to --chdir to (appended: the app's own directory comes first).
sys.path.append(os.path.dirname(os.path.abspath(__file__)))
logger_class = "core.gunicorn_logging.Logger"
# gunicorn's own error answers (a request it cannot parse, a worker stopped mid-request) as problem+json, as the API's.
from core import gunicorn_errors  # noqa: E402 - importable only once the directory is on sys.path

gunicorn_errors.install()

# A setting the application cannot use stops gunicorn here, in one line, instead of every worker failing to boot
# with a traceback.
from core.config import ConfigError, load  # noqa: E402 - importable only once the directory is on sys.path

try:
    load(os.environ, os.path.join(os.path.dirname(os.path.abspath(__file__)), "instance"))
except ConfigError as exc:
    sys.exit(f"Error: {exc.message}")

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wallet-metrics-")
else:  # stale files from a previous run would be summed with this one's
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    try:
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    except OSError as exc:  # a file, or a place no directory can be made: was a traceback (found by an audit)
        sys.exit(f"Error: PROMETHEUS_MULTIPROC_DIR={os.environ['PROMETHEUS_MULTIPROC_DIR']!r} cannot be a directory"
                 f" of metrics: {exc.strerror}")


def child_exit(_server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

# gunicorn >= 25 opens a control socket at ~/.gunicorn/gunicorn.ctl by default: one path for every instance on
# the machine, so a second instance takes it over and deletes it on exit (found by tests/e2e/test_crash.py).
# One socket per instance instead:
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or os.path.join(
    tempfile.gettempdir(), "wallet-gunicorn-" + bind.replace(":", "-").replace("/", "_") + ".ctl"
)
