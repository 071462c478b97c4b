"""The application factory: configuration, extensions, blueprints, error handling, CLI.

The only module that imports every package (``core``, ``notifications``, ``security``, ``wallet``) and wires
them together.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import click
from flask import Flask, Response, current_app, g, request
from flask_limiter.errors import RateLimitExceeded
from flask_migrate import Migrate, upgrade
from werkzeug.exceptions import HTTPException
from werkzeug.serving import run_simple
from werkzeug.middleware.proxy_fix import ProxyFix

from core import config as settings
from core import idempotency
from core.clock import SystemClock
from core.db import db
from core.errors import AppError, RateLimited
from core.ops import bp as ops_bp
from core.ratelimit import limiter
from core.worker import BackgroundWorker, Task
from notifications import dispatcher
from notifications.sms import ConsoleSmsSender
from security import models as _security_models  # noqa: F401 - register tables
from security.api import bp as accounts_bp
from security.passwords import Passwords

ROOT = Path(__file__).resolve().parent
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
log = logging.getLogger("wallet")

migrate = Migrate(directory=str(ROOT / "migrations"), render_as_batch=True, compare_type=True)

_HTTP_CODES = {
    400: "malformed_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the application. ``config`` overrides the environment (tests use it)."""
    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    env = dict(os.environ)
    if config:
        env.update({k: str(v) for k, v in config.items() if k in settings.SETTINGS})
    app.config.update(settings.load(env, app.instance_path))
    if config:
        app.config.update({k: v for k, v in config.items() if k not in settings.SETTINGS})
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s %(message)s")

    if app.config["PROXY_FIX_X_FOR"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"],  # type: ignore[method-assign]
                                x_proto=1, x_host=1)

    db.init_app(app)
    migrate.init_app(app, db)
    limiter.init_app(app)
    app.extensions["clock"] = app.config.get("CLOCK") or SystemClock()
    app.extensions["passwords"] = Passwords(
        app.config["PASSWORD_PEPPER"],
        time_cost=app.config["ARGON2_TIME_COST"],
        memory_kib=app.config["ARGON2_MEMORY_KIB"],
        parallelism=app.config["ARGON2_PARALLELISM"],
    )
    app.extensions["sms_sender"] = app.config.get("SMS_SENDER") or ConsoleSmsSender(app.config["SMS_CONSOLE_FILE"])

    app.register_blueprint(accounts_bp)
    app.register_blueprint(ops_bp)
    _install_hooks(app)
    _install_error_handlers(app)
    _install_cli(app)
    return app


# --- request hooks and errors ---------------------------------------------------------------------------


def _install_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _problem(body: dict[str, Any], status: int) -> Response:
    body.setdefault("request_id", g.get("request_id"))
    response = current_app.json.response(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(AppError)
    def app_error(exc: AppError) -> Response:
        db.session.rollback()
        return _problem(exc.to_problem(), exc.status)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded) -> Response:
        response = _problem(RateLimited(f"Rate limit exceeded: {exc.description}").to_problem(), 429)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        body = {
            "type": "about:blank",
            "title": exc.name,
            "status": status,
            "detail": exc.description or exc.name,
            "code": _HTTP_CODES.get(status, re.sub(r"\W+", "_", exc.name.lower())),
        }
        return _problem(body, status)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        db.session.rollback()
        log.exception("unhandled error request_id=%s %s %s", g.get("request_id"), request.method, request.path)
        body = {"type": "about:blank", "title": "Internal error", "status": 500,
                "detail": "Something went wrong on our side. Quote the request id.", "code": "internal_error"}
        return _problem(body, 500)


# --- command line ---------------------------------------------------------------------------------------


def _background_tasks(app: Flask) -> list[Task]:
    sender = app.extensions["sms_sender"]
    return [
        Task("dispatch-sms", lambda: dispatcher.dispatch_once(sender), app.config["DISPATCH_INTERVAL_SECONDS"]),
        Task("purge-idempotency-keys", idempotency.purge_expired, 3600),
    ]


def _install_cli(app: Flask) -> None:
    @app.cli.command("dev")
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", default=5000, type=int)
    def dev(host: str, port: int) -> None:
        """Apply migrations, start the background workers and serve on HOST:PORT (development)."""
        upgrade(revision="heads")
        worker = BackgroundWorker(current_app._get_current_object(), _background_tasks(current_app))  # type: ignore[attr-defined]
        worker.start()
        click.echo(f"SMS messages are appended to {current_app.config['SMS_CONSOLE_FILE']}")
        run_simple(host, port, current_app._get_current_object(), threaded=True, use_reloader=False)  # type: ignore[attr-defined]
        worker.stop()

    notifications_cli = click.Group("notifications", help="The SMS outbox.")
    app.cli.add_command(notifications_cli)

    @notifications_cli.command("dispatch")
    @click.option("--once", is_flag=True, help="Send what is due now and exit.")
    def dispatch(once: bool) -> None:
        """Send due alerts; runs until stopped unless --once."""
        sender = current_app.extensions["sms_sender"]
        if once:
            click.echo(f"sent {dispatcher.dispatch_all(sender)}")
            return
        interval = current_app.config["DISPATCH_INTERVAL_SECONDS"]
        while True:
            if not dispatcher.dispatch_once(sender):
                time.sleep(interval)
