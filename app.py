"""The application factory: configuration, extensions, blueprints, error handling, CLI.

The only module that imports every package (``core``, ``notifications``, ``security``, ``wallet``) and wires
them together.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import click
from alembic.script import ScriptDirectory
from flask import Flask, Response, current_app, g, request
from flask.cli import AppGroup
from flask_limiter.errors import RateLimitExceeded
from flask_migrate import Migrate, upgrade
from gunicorn.http.errors import ParseException as GunicornParseError
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import run_simple

from core import config as settings
from core import idempotency, observability
from core.clock import SystemClock
from core.db import db, driver_reason, in_snapshot
from core.errors import AppError, NotFound, RateLimited, Unauthenticated, ValidationFailed
from core.ops import bp as ops_bp
from core.ratelimit import limiter
from core.sql import Viewing
from core.worker import BackgroundWorker, Stop, Task
from notifications import dispatcher, sms
from notifications.api import bp as notifications_bp
from notifications.models import FAILED, PENDING, SENDING
from security import freezes, retention
from security import identity_models as _identity_models  # noqa: F401 - register tables
from security import metrics as security_metrics
from security import models as _security_models  # noqa: F401 - register tables
from security.alerts_api import bp as alerts_bp
from security.api import bp as accounts_bp
from security.identity import SimulatedIdentityProvider
from security.identity_api import bp as identity_bp
from security.models import User
from security.passwords import Passwords
from security.phones import normalize_phone
from wallet import card_models as _card_models  # noqa: F401 - register tables
from wallet import check as ledger_check
from wallet import check_log, escrow, escrow_models, funds, ledger, limits, timeline, trades
from wallet import funds_models as _funds_models  # noqa: F401 - register tables
from wallet import models as _wallet_models  # noqa: F401 - register tables
from wallet.banks import SimulatedBank
from wallet.cards_api import bp as bank_cards_bp
from wallet.funds_api import bp as wallet_bp
from wallet.trades_api import bp as trades_bp

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("wallet")

migrate = Migrate(directory=str(ROOT / "migrations"), render_as_batch=True, compare_type=True)

_SANDBOX = {
    "identity_provider": "real-name checks are simulated, no identity is verified with the authorities",
    "bank_gateway": "cards are linked, debited and paid out by a simulated bank, no real money moves",
}

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
    observability.configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])

    if app.config["PROXY_FIX_X_FOR"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"],  # type: ignore[method-assign]
                                x_proto=1, x_host=1)

    db.init_app(app)
    migrate.init_app(app, db)
    # Before the limiter's hooks, so that this one runs after its headers are added (Flask runs the last registered
    # first).
    app.after_request(_retry_after_only_when_asked)
    limiter.init_app(app)
    app.extensions["clock"] = app.config.get("CLOCK") or SystemClock()
    app.extensions["schema_problem"] = _schema_problem  # /readyz is not ready on a database to migrate
    app.extensions["passwords"] = Passwords(
        app.config["PASSWORD_PEPPER"],
        time_cost=app.config["ARGON2_TIME_COST"],
        memory_kib=app.config["ARGON2_MEMORY_KIB"],
        parallelism=app.config["ARGON2_PARALLELISM"],
    )
    # Twilio when TWILIO_ACCOUNT_SID is configured, the console (instance/sms.jsonl) otherwise.
    app.extensions["sms_sender"] = app.config.get("SMS_SENDER") or sms.sender_from_config(app.config)

    # Only the sandbox partners of DESIGN 7.2 exist so far; a production deployment says so in its log.
    app.extensions["identity_provider"] = app.config.get("IDENTITY_PROVIDER") or SimulatedIdentityProvider()
    app.extensions["bank_gateway"] = app.config.get("BANK_GATEWAY") or SimulatedBank(
        latency=float(app.config.get("BANK_LATENCY_SECONDS", 0.0))
    )
    if app.config["WALLET_ENV"] == "production":
        for name, partner in (("identity provider", "identity_provider"), ("bank gateway", "bank_gateway")):
            if isinstance(app.extensions[partner], SimulatedIdentityProvider | SimulatedBank):
                log.warning("sandbox %s (DESIGN 7.2): %s", name, _SANDBOX[partner])
        if not app.config["METRICS_TOKEN"]:
            log.warning("/metrics is not served: set METRICS_TOKEN and have the scraper send it as a bearer token")
        if not app.config["RATELIMIT_ENABLED"]:
            log.warning("rate limits are off (RATELIMIT_ENABLED=false): SMS code sends and logins are not limited per"
                        " phone number or client")
        elif app.config["RATELIMIT_STORAGE_URI"].startswith("memory://"):
            log.warning("rate limits are counted in each process (RATELIMIT_STORAGE_URI=memory://): every gunicorn"
                        " worker allows a phone number the full limit; set redis://... to share them")

    app.register_blueprint(accounts_bp)
    app.register_blueprint(identity_bp)
    app.register_blueprint(bank_cards_bp)
    app.register_blueprint(notifications_bp)
    app.register_blueprint(alerts_bp)
    app.register_blueprint(wallet_bp)
    app.register_blueprint(trades_bp)
    app.register_blueprint(ops_bp)
    _install_hooks(app)
    observability.init_app(app)
    observability.add_gauges(_outbox_gauges)
    observability.add_gauges(security_metrics.gauges)
    observability.add_gauges(check_log.gauges)
    _install_error_handlers(app)
    _install_cli(app)
    return app


def _outbox_gauges():
    status = dispatcher.queue_status()
    age = status.oldest_unsent_age.total_seconds() if status.oldest_unsent_age else 0.0
    # A one-time code's message given up (expired unsent, superseded by a newer code) is no failure: the user asked
    # again, or will; counted apart, so that an alert on failed SMS fires for alerts that failed.
    failed = status.by_status.get(FAILED, 0) - status.codes_given_up
    counts = {PENDING: status.by_status.get(PENDING, 0), SENDING: status.by_status.get(SENDING, 0), FAILED: failed}
    return [
        ("wallet_outbox_alerts", "alerts waiting to be sent (pending, sending) and given up as failed (failed: refused"
         " for good or unsent past their maximum age; one-time codes given up are wallet_outbox_codes_given_up)",
         ["status"], [([name], float(count)) for name, count in counts.items()]),
        ("wallet_outbox_codes_given_up", "one-time code messages given up unsent: the code expired, or a newer code"
         " the user asked for went out first", [], [([], float(status.codes_given_up))]),
        ("wallet_outbox_oldest_unsent_seconds", "age of the oldest alert not yet handed to the provider", [],
         [([], age)]),
        ("wallet_outbox_resends_in_doubt", "re-sends after a dispatcher died mid-hand-over", [],
         [([], float(status.resends_in_doubt))]),
    ]


# --- request hooks and errors ---------------------------------------------------------------------------


def _install_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        g.request_id = observability.request_id_for(request.headers.get("X-Request-ID", ""))

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        for name, value in _API_HEADERS if request.path.startswith("/api/") else _SECURITY_HEADERS:
            headers[name] = value
        headers["X-Request-ID"] = g.get("request_id", "")
        return response


_COME_BACK = frozenset({429, 503})


def _retry_after_only_when_asked(response: Response) -> Response:
    """Retry-After only on the answers that ask the client to come back (429, 503), as the OpenAPI document says:
    flask-limiter adds it to every answer of a limited endpoint (found by an audit: ``Retry-After: 3600`` on a 201
    login, a 401 wrong password, a 422; a client honouring it waited an hour). An error of ours that says when to come
    back (``app_error``: a 503 ``bank_unavailable``, a 423 whose lock lifts by itself) is answered with its own
    seconds, written here over the limiter's window."""
    retry_after = g.get("retry_after")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    elif response.status_code not in _COME_BACK:
        response.headers.pop("Retry-After", None)
    return response


_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
)
_API_HEADERS = (*_SECURITY_HEADERS, ("Cache-Control", "no-store"))


def _problem(body: dict[str, Any], status: int) -> Response:
    body.setdefault("request_id", g.get("request_id"))
    response = current_app.json.response(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def _bearer_challenge(exc: AppError) -> str:
    """The challenge a 401 must carry (RFC 9110 15.5.2; RFC 6750 3): ``invalid_token`` when the bearer token sent is
    what was refused, none when the request sent none or a password was wrong (found by the contract audit: no 401
    had one, and HTTP stacks that go by it failed on the answer instead of reading its problem+json)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if isinstance(exc, Unauthenticated) and exc.bearer_refused and scheme.lower() == "bearer" and token.strip():
        return f'{_CHALLENGE}, error="invalid_token"'
    return _CHALLENGE


_CHALLENGE = 'Bearer realm="wallet"'


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(AppError)
    def app_error(exc: AppError) -> Response:
        db.session.rollback()
        response = _problem(exc.to_problem(), exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = _bearer_challenge(exc)
        # Sent by ``_retry_after_only_when_asked``, after the rate limiter has set its own.
        g.retry_after = (current_app.config[exc.retry_after_setting] if exc.retry_after_setting is not None
                         else exc.retry_after)
        return response

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
        response = _problem(body, status)
        # Keep what the exception says besides its HTML media type, e.g. the Allow header a 405 must carry.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(GunicornParseError)
    def unreadable_body(exc: GunicornParseError) -> Response:
        # gunicorn raises these while the view reads a chunked body whose framing is broken (a chunk size that is no
        # hex number, a chunk not ended by CRLF); they are no OSError, so werkzeug passes them on (found by an audit:
        # a 500 with a traceback for the client's mistake).
        db.session.rollback()
        body = {"type": "about:blank", "title": "Bad Request", "status": 400,
                "detail": f"The request body is not valid HTTP chunked encoding: {exc}", "code": "malformed_request"}
        return _problem(body, 400)

    @app.errorhandler(OperationalError)
    def database_unavailable(exc: OperationalError) -> Response:
        # The database is down, restarting or unreachable (a transaction that lost its connection before
        # COMMIT was already retried once): a temporary condition the client may retry, not our bug.
        db.session.rollback()
        log.warning("database unavailable request_id=%s %s %s: %s", g.get("request_id"), request.method,
                    request.path, driver_reason(exc))
        body = {"type": "about:blank", "title": "Service unavailable", "status": 503,
                "detail": "The database cannot be reached right now. Retry shortly (with the same Idempotency-Key).",
                "code": "database_unavailable"}
        response = _problem(body, 503)
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        db.session.rollback()
        log.exception("unhandled error request_id=%s %s %s", g.get("request_id"), request.method, request.path)
        body = {"type": "about:blank", "title": "Internal error", "status": 500,
                "detail": "Something went wrong on our side. Quote the request id.", "code": "internal_error"}
        return _problem(body, 500)


# --- command line ---------------------------------------------------------------------------------------


def _worker_tasks(app: Flask) -> list[Task]:
    """What `flask worker` runs (and the dev server's thread, with the SMS dispatcher added)."""
    return [
        Task("escrow-sweep", trades.sweep, app.config["ESCROW_SWEEP_SECONDS"]),
        Task("process-withdrawals", funds.process_withdrawals, 1.0),
        Task("retry-pending-topups", funds.retry_pending_topups, 30.0),
        Task("expire-holds", ledger.expire_holds, 5.0),
        Task("purge-idempotency-keys", idempotency.purge_expired, 3600),
        Task("purge-expired-credentials", retention.purge_expired, 3600),
        Task("purge-daily-usage", limits.purge_past_days, 3600),
        Task("ledger-check", lambda: check_log.run_and_record("worker"), app.config["LEDGER_CHECK_SECONDS"]),
    ]


def _background_tasks(app: Flask) -> list[Task]:
    sender = app.extensions["sms_sender"]
    dispatch = Task("dispatch-sms", lambda: dispatcher.dispatch_once(sender), app.config["DISPATCH_INTERVAL_SECONDS"])
    return [dispatch, *_worker_tasks(app)]


class _Phone(click.ParamType):
    """A mobile number on the command line, normalised as the API does (E.164); a bad one is a usage error."""

    name = "phone"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return normalize_phone(str(value))
        except ValidationFailed:
            self.fail(f"{value!r} is not a valid mobile number", param, ctx)


PHONE = _Phone()


class _Text(click.ParamType):
    """Text the database can store: a byte the terminal's encoding could not decode reaches Python as a lone surrogate
    (PEP 383), which no driver can encode, and PostgreSQL cannot store a NUL; either is a usage error (found by an
    audit: a traceback)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text_value = str(value)
        try:
            text_value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(f"{text_value!r} holds bytes that are not UTF-8 text", param, ctx)
        if "\x00" in text_value:
            self.fail(f"{text_value!r} holds a NUL character", param, ctx)
        return text_value


TEXT = _Text()


@functools.cache
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """The migrations this code knows, and their heads (what it needs the database to be at)."""
    script = ScriptDirectory(str(ROOT / "migrations"))
    return frozenset(rev.revision for rev in script.walk_revisions()), frozenset(script.get_heads())


def _schema_problem() -> str | None:
    """What to do before this database can serve this code (apply the migrations), or None when it can. A database
    at a migration this code does not know is newer than the code (migrated ahead of a rolling deploy): it serves."""
    # On a connection of its own (alembic's own reading of this table logs two lines).
    applied = in_snapshot(lambda connection: set(connection.scalars(text("SELECT version_num FROM alembic_version")))
                          if inspect(connection).has_table("alembic_version") else set())
    known, heads = _revisions()
    if applied == heads or not applied <= known:
        return None
    state = f"is at migration {', '.join(sorted(applied))}" if applied else "has no tables yet"
    return f"the database {state}, this code needs {', '.join(sorted(heads))}: run `flask --app app db upgrade`"


def _migrated(command: Any) -> Any:
    """Run ``command`` only on a database every migration has been applied to; otherwise say what to run (its
    first statement would fail with a SQL traceback, and a loop would log one every round, forever)."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            problem = _schema_problem()
        except OperationalError as exc:
            reason = driver_reason(exc)
            raise click.ClickException(f"the database cannot be reached: {reason}") from None
        if problem:
            raise click.ClickException(problem)
        try:
            return command(*args, **kwargs)
        except OperationalError as exc:  # it went away during the command (found by an audit: a traceback)
            raise click.ClickException(f"the database cannot be reached: {driver_reason(exc)}") from None

    return checked


def _install_cli(app: Flask) -> None:
    @app.cli.command("dev")
    @click.option("--host", default="127.0.0.1")
    @click.option("--port", default=5000, type=click.IntRange(1, 65535))
    def dev(host: str, port: int) -> None:
        """Apply migrations, start the background workers and serve on HOST:PORT (development)."""
        upgrade()
        # Alembic's env.py configured logging from alembic.ini (root at WARN, its own format): the app's again.
        observability.configure_logging(current_app.config["LOG_LEVEL"], current_app.config["LOG_FORMAT"])
        worker = BackgroundWorker(current_app._get_current_object(), _background_tasks(current_app))  # type: ignore[attr-defined]
        worker.start()
        click.echo(f"SMS messages are appended to {current_app.config['SMS_CONSOLE_FILE']}")
        run_simple(host, port, current_app._get_current_object(), threaded=True, use_reloader=False)  # type: ignore[attr-defined]
        worker.stop()

    # AppGroup: its commands run inside an app context however they are invoked (flask CLI or test runner).
    notifications_cli = AppGroup("notifications", help="The SMS outbox.")
    app.cli.add_command(notifications_cli)

    @notifications_cli.command("dispatch")
    @_migrated
    @click.option("--once", is_flag=True, help="Send what is due now and exit.")
    @click.option("--batch-size", type=click.IntRange(1, 1000), default=None,
                  help="Alerts claimed at a time, 1-1000 (default SMS_BATCH_SIZE).")
    def dispatch(once: bool, batch_size: int | None) -> None:
        """Send due alerts. Runs until SIGTERM or Ctrl-C, which finish the message in hand and give the rest
        of the batch back to the queue; --once sends what is due and exits."""
        sender = current_app.extensions["sms_sender"]
        if once:
            # What the provider took, not what was claimed: one refused is retried later or failed (found by an
            # audit: "sent 3" was printed for three alerts Twilio had refused).
            tally: Counter[str] = Counter()
            claimed = dispatcher.dispatch_all(sender, batch_size, tally)
            click.echo(f"sent {tally['sent']}, refused {tally['refused']}, in doubt {tally['in doubt']}"
                       f" (of {claimed} claimed)")
            if tally["refused"] or tally["in doubt"]:
                click.echo("the others are retried or failed: see `flask notifications status`")
            return
        stop = Stop()  # not a threading.Event, whose set() may deadlock in a signal handler
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop.set())
        dispatcher.run(sender, stop, batch_size=batch_size)

    @notifications_cli.command("status")
    @_migrated
    def notifications_status() -> None:
        """Queue depth by status and the age of the oldest alert not yet handed to the provider."""
        for line in dispatcher.queue_status(totals=True).lines():
            click.echo(line)

    wallet_cli = AppGroup("wallet", help="The ledger.")
    app.cli.add_command(wallet_cli)

    @wallet_cli.command("check")
    @_migrated
    def wallet_check() -> None:
        """Recompute every balance from the transfers and check the ledger invariants; exit 1 if any fails."""
        problems = check_log.run_and_record("cli")
        for problem in problems:
            click.echo(problem, err=True)
        if problems:
            raise SystemExit(1)
        counts = ledger_check.counts()
        click.echo("ledger clean: " + ", ".join(f"{n} {name}" for name, n in counts.items()))

    @app.cli.command("worker")
    @_migrated
    def worker() -> None:
        """Run the background work except SMS (escrow deadlines, payouts, pending top-ups, expired holds, purging
        expired Idempotency-Keys, credentials and past days' spending totals, the periodic ledger check) until
        SIGTERM. Several may run at once."""
        runner = BackgroundWorker(current_app._get_current_object(), _worker_tasks(current_app))  # type: ignore[attr-defined]
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: runner.stop())
        runner.run()  # in this thread: returns once stopped

    escrow_cli = AppGroup("escrow", help="Escrow trades.")
    app.cli.add_command(escrow_cli)

    @escrow_cli.command("sweep")
    @_migrated
    @click.option("--loop", is_flag=True, help="Keep sweeping every ESCROW_SWEEP_SECONDS until stopped.")
    def escrow_sweep(loop: bool) -> None:
        """Apply due deadlines: close unpaid trades, remind, auto-confirm, settle silent refunds."""

        def sweep_once() -> frozenset[str]:
            result = trades.run_sweep()
            click.echo(" ".join(f"{name}={n}" for name, n in result.applied.items()))
            return result.failed

        if not loop:
            # Run from cron, a trade whose deadline raised (logged with its traceback) must fail the job, or nobody
            # learns that its buyer's money stays held past the deadline (found by an audit: exit 0).
            if failed := sweep_once():
                raise click.ClickException(f"{len(failed)} trade(s) could not be swept; the log has why, and the "
                                           f"next sweep tries again: {', '.join(sorted(failed))}")
            return
        # A failing round (a database restart, a bug) is logged when it starts and when it ends, as in `flask worker`.
        task = Task("escrow-sweep", sweep_once, current_app.config["ESCROW_SWEEP_SECONDS"])
        runner = BackgroundWorker(current_app._get_current_object(), [task])  # type: ignore[attr-defined]
        # SIGTERM and Ctrl-C finish the sweep in hand, as in `flask worker` (found by an audit: no handler, so SIGTERM
        # killed the process wherever it was and Ctrl-C ended it with "Aborted!" and exit 1).
        previous = {signum: signal.signal(signum, lambda _signum, _frame: runner.stop())
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            runner.run()
        finally:  # invoked from a test runner, the process goes on
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @escrow_cli.command("verify")
    @_migrated
    @click.argument("trade_id", type=TEXT)
    def escrow_verify(trade_id: str) -> None:
        """Recompute a trade's hash-chained timeline and check that the trade's row agrees with the terms and money
        it records; exit 1 and name the entry if either was tampered with."""
        # The trade's head and its entries in one statement, as the evidence bundle reads them (found by the evidence
        # audit: read one after the other, an entry a party added between the two was reported as forged, and on
        # SQLite the ORM read held the write lock, so that party's step waited for the verifier).
        try:
            trade, rows = trades.get_trade_with_timeline(Viewing("operator", staff=True), trade_id)
        except NotFound:
            raise click.ClickException(f"no trade {trade_id}") from None
        result = timeline.verify(trade, rows)
        if not result.intact:
            click.echo(f"BROKEN at entry {result.broken_at}: {result.problem}", err=True)
            raise SystemExit(1)
        click.echo(f"intact: {result.entries} entries, head {trade.timeline_hash}")

    users_cli = AppGroup("users", help="Accounts.")
    app.cli.add_command(users_cli)

    def account_with(phone: str) -> User:
        user = db.session.scalars(select(User).where(User.phone == phone)).first()
        if user is None:
            raise click.ClickException("no account has this phone number")
        return user

    def set_staff(phone: str, is_staff: bool) -> None:
        user = account_with(phone)
        user.is_staff = is_staff
        db.session.commit()
        click.echo(f"{user.id} is {'staff' if is_staff else 'not staff'}")

    @users_cli.command("grant-staff")
    @_migrated
    @click.argument("phone", type=PHONE)
    def grant_staff(phone: str) -> None:
        """Let the account with PHONE decide disputes."""
        set_staff(phone, True)

    @users_cli.command("revoke-staff")
    @_migrated
    @click.argument("phone", type=PHONE)
    def revoke_staff(phone: str) -> None:
        """Take dispute arbitration away from the account with PHONE (from its next request on)."""
        set_staff(phone, False)

    @users_cli.command("freeze")
    @_migrated
    @click.argument("phone", type=PHONE)
    @click.option("--reason", required=True, type=TEXT,
                  help="Why (kept with the freeze; the owner is not shown it).")
    def freeze(phone: str, reason: str) -> None:
        """Stop the money of the account with PHONE from leaving it (R13): payments, top-ups, withdrawals and card
        binding are refused until `unfreeze`; money still comes in. The owner is told by SMS. An account frozen
        already keeps its freeze and its first reason, and the command says so."""
        if not reason.strip():
            raise click.BadParameter("give a reason", param_hint="--reason")
        if len(reason.strip()) > freezes.MAX_REASON:  # kept whole or not at all: never cut short without a word
            raise click.BadParameter(f"a reason has at most {freezes.MAX_REASON} characters", param_hint="--reason")
        user_id = account_with(phone).id
        done = freezes.freeze_account(user_id, reason)
        if done.new:
            click.echo(f"{user_id} frozen since {done.since.isoformat()}")
        else:  # the freeze in place, and its reason, stand: a second reason is not kept
            click.echo(f"{user_id} was frozen already, for {done.reason!r} (kept: --reason is not recorded), frozen"
                       f" since {done.since.isoformat()}")

    @users_cli.command("unfreeze")
    @_migrated
    @click.argument("phone", type=PHONE)
    def unfreeze(phone: str) -> None:
        """Lift the freeze of the account with PHONE; the owner is told by SMS."""
        user_id = account_with(phone).id
        click.echo(f"{user_id} unfrozen" if freezes.lift(user_id) else f"{user_id} was not frozen")

    @users_cli.command("frozen")
    @_migrated
    def frozen() -> None:
        """List the accounts frozen now, longest frozen first: id, phone, since when, and why."""
        rows = freezes.frozen_accounts()
        for row in rows:
            click.echo(f"{row.id}  {row.phone}  since {row.frozen_at.isoformat()}  {row.reason}")
        click.echo(f"{len(rows)} frozen")

    @users_cli.command("set-fee")
    @_migrated
    @click.argument("phone", type=PHONE)
    @click.argument("basis_points", type=click.IntRange(0, escrow.MAX_FEE_BP))
    def set_fee(phone: str, basis_points: int) -> None:
        """Charge the seller with PHONE a fee of BASIS_POINTS on future trades: 0, or 100 to 150 for a merchant
        (100 = 1 %; R10: merchants pay 1-1.5 %)."""
        if not escrow.fee_rate_allowed(basis_points):
            raise click.BadParameter(f"a seller's fee is 0, or {escrow.MIN_FEE_BP} to {escrow.MAX_FEE_BP} basis points"
                                     " for a merchant (R10: 1-1.5 %)", param_hint="BASIS_POINTS")
        user = account_with(phone)
        settings = db.session.get(escrow_models.SellerSettings, user.id) or escrow_models.SellerSettings(
            user_id=user.id)
        settings.fee_bp = basis_points
        db.session.add(settings)
        db.session.commit()
        click.echo(f"{user.id} fee {basis_points} bp")
