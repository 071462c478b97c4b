"""gunicorn's own log lines (workers booting, exiting, timing out) in the application's format: with
``LOG_FORMAT=json`` (the production default) each is one JSON object like the application's lines, with
``request_id`` ``-``, so a log pipeline reads a single format. ``gunicorn.conf.py`` names this class as
``logger_class``."""

from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn import glogging

from core.config import log_format
from core.observability import JsonFormatter, RequestIdFilter


class Logger(glogging.Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if log_format(os.environ.get("LOG_FORMAT", ""), os.environ.get("WALLET_ENV", "")) != "json":
            return
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
            handler.addFilter(RequestIdFilter())
        logging.getLogger("gunicorn.error").propagate = False  # one line per event, not a second plain one
