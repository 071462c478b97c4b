"""Logs a person (or a log pipeline) can read, and Prometheus metrics.

Logs: every line carries the request id (``-`` outside a request). ``LOG_FORMAT=json`` writes one JSON object
per line (``ts``, ``level``, ``logger``, ``msg``, ``request_id``, and ``exc`` for tracebacks); ``text`` is for
people at a terminal. Each request also logs one access line with method, path, status and duration.

Metrics at ``/metrics``:

* ``wallet_http_request_duration_seconds{endpoint,method,status}``: a histogram per process. Under gunicorn
  set ``PROMETHEUS_MULTIPROC_DIR`` (``gunicorn.conf.py`` does) so every worker's samples are summed.
* gauges read from the database at scrape time, registered by the packages that own them through
  ``add_gauges`` (outbox depth and age, locked credentials, lock events, the last ledger check), so they
  are the same whichever process answers.

Only the scraper reads them: with ``METRICS_TOKEN`` set, ``/metrics`` answers a request bearing it and is a 404 for
anyone else; without it, it is open outside production and not served in production (see ``_scraper_allowed``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, current_app, g, has_request_context, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import OperationalError, ProgrammingError

from core.db import driver_reason

log = logging.getLogger("wallet.access")
_log = logging.getLogger(__name__)

# (name, help, labels) -> rows of (label values, value)
GaugeSource = Callable[[], Iterable[tuple[str, str, list[str], list[tuple[list[str], float]]]]]
_SOURCES: list[GaugeSource] = []

REQUEST_SECONDS = Histogram(
    "wallet_http_request_duration_seconds", "Time to answer a request", ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# The id of the request served outside Flask's request context, for the lines logged on its behalf: gunicorn answering
# one itself (``core.gunicorn_errors``).
SERVING: ContextVar[str] = ContextVar("serving_request_id", default="-")


def request_id_for(supplied: str) -> str:
    """A request's id: the client's ``X-Request-ID`` when it is a short token of letters, digits, ``.``, ``_``, ``-``
    (nothing that could break a log line), else 128 random bits."""
    return supplied if _REQUEST_ID.fullmatch(supplied) else os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else SERVING.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info))
        # JSON escapes the C0 controls; the three other characters Unicode (and Python's ``splitlines``) breaks lines
        # at are written as they are, and a client's path or device name split the line in two.
        return json.dumps(line, ensure_ascii=False).translate(_LINE_BREAKS)


_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class TextFormatter(logging.Formatter):
    """One line per record: line breaks and other control characters in the message (a request's path is decoded
    from what the client sent: ``%0A`` is a line break) are written escaped, so no client can start a log line of its
    own. A traceback still follows on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if record.name == "werkzeug":  # the dev server colours its access lines; the colour is not the client's
            line = _COLOUR.sub("", line)
        return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), line)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1 (U+0085 breaks lines), LS, PS
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # an ANSI "select graphic rendition" sequence: colour and weight only


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)


def add_gauges(source: GaugeSource) -> None:
    """Register a function that yields ``(name, help, label_names, [(label_values, value), ...])``."""
    if source not in _SOURCES:
        _SOURCES.append(source)


class _DatabaseGauges(Collector):
    """The gauges read from the database, and ``wallet_database_up``: while the database cannot be reached the
    scrape still answers (request latencies, and ``wallet_database_up 0``) instead of failing with a 503, so the
    metrics an operator looks at during an outage are there."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = 1
        for source in _SOURCES:
            try:
                readings = list(source())
            except OperationalError as exc:
                _log.warning("metrics: the database cannot be reached (%s); its gauges are left out",
                             driver_reason(exc))
                up = 0
                break
            except ProgrammingError:
                # A table missing because the migrations have not been applied (PostgreSQL says so as a programming
                # error; it was a 500 on every scrape, found by an audit). Any other such error is a bug: raised.
                schema_problem = current_app.extensions.get("schema_problem")
                problem = schema_problem() if schema_problem else None
                if not problem:
                    raise
                _log.warning("metrics: %s; the database's gauges are left out", problem)
                up = 0
                break
            for name, doc, labels, rows in readings:
                family = GaugeMetricFamily(name, doc, labels=labels)
                for values, value in rows:
                    family.add_metric(values, value)
                yield family
        reachable = GaugeMetricFamily("wallet_database_up",
                                      "1 when this scrape could read the database (reachable, migrated), else 0")
        reachable.add_metric([], up)
        yield reachable


_timings: dict[tuple[str, str, int], Any] = {}


def _timing(endpoint: str, method: str, status: int) -> Any:
    """The histogram's child for these labels (``labels()`` takes a lock and builds a key on every call)."""
    child = _timings.get((endpoint, method, status))
    if child is None:
        child = _timings[(endpoint, method, status)] = REQUEST_SECONDS.labels(endpoint, method, str(status))
    return child


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _scraper_allowed() -> bool:
    """Whether this request may read /metrics: with ``METRICS_TOKEN`` set, only one that sends it as its bearer
    token; without it, anyone outside production and no one in production. The gauges count events that single
    requests cause (an account's lock alert, a code sent only to a registered number), so a stranger comparing two
    scrapes would learn which phone numbers have accounts."""
    token = current_app.config.get("METRICS_TOKEN", "")
    if not token:
        return current_app.config.get("WALLET_ENV") != "production"
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def init_app(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        started = g.get("started")
        if started is None:
            return response
        elapsed = time.perf_counter() - started
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        # A client may send any method name (gunicorn accepts made-up ones): those share one series.
        method = request.method if request.method in _METHODS else "other"
        _timing(endpoint, method, response.status_code).observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s %s %.1fms", request.method, request.path, response.status_code, elapsed * 1000,
                     extra={"method": request.method, "path": request.path, "status": response.status_code,
                            "duration_ms": round(elapsed * 1000, 1)})
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        if not _scraper_allowed():
            abort(404)  # as if there were none: a stranger learns nothing, not even that it exists
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(REQUEST_SECONDS)
        registry.register(_DatabaseGauges())
        return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
