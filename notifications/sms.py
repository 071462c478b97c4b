"""SMS senders behind one interface. The dispatcher calls ``send``; it never knows which provider it has.

``send`` returns the provider's message id, or raises ``SendFailed`` saying whether trying again could
help (``permanent=False``) or not (an invalid or unreachable number).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class SendFailed(Exception):
    """The provider did not accept the message. ``permanent`` means retrying cannot succeed."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class SmsSender(Protocol):
    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str: ...


class ConsoleSmsSender:
    """Development sender: logs each message and appends it as one JSON line to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        line = json.dumps({"to": to, "body": body, "event": event, "created_at": created_at}, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        log.info("sms to=%s event=%s id=%s", to, event, alert_id)
        return f"console-{alert_id}"
