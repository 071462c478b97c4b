"""`make run` (`flask dev`) applies the migrations and then serves; Alembic's env.py configures logging from
alembic.ini as it runs, so the dev server lost the application's logging. Found by the operations audit: after
`make run` the root logger was at WARN with Alembic's format, so the access lines with their request id, "background
worker started" and every other INFO line were gone, and what was left had no request id."""

from __future__ import annotations

import logging


def test_the_dev_server_keeps_the_application_log_format_after_applying_the_migrations(app, monkeypatch):
    import app as app_module

    seen: dict[str, object] = {}

    def serve(*_args, **_kwargs) -> None:
        root = logging.getLogger()
        seen["info"] = logging.getLogger("wallet.access").isEnabledFor(logging.INFO)
        seen["formats"] = [handler.formatter._fmt for handler in root.handlers if handler.formatter]

    monkeypatch.setattr(app_module, "run_simple", serve)
    monkeypatch.setattr(app_module.BackgroundWorker, "start", lambda self: None)
    result = app.test_cli_runner().invoke(args=["dev", "--port", "5999"])
    assert result.exit_code == 0, result.output
    assert seen["info"] is True
    assert any("request_id" in (fmt or "") for fmt in seen["formats"]), seen["formats"]
