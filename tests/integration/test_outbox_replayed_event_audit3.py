"""An alert event written twice (an operator restoring ``alert_events`` from a backup, a replayed row) must neither
stop the outbox nor send a message twice: each message is one alert, whatever rows carried it (sms audit)."""

from sqlalchemy import select, text

from core.db import db, run_in_transaction
from notifications import dispatcher
from notifications.models import Alert, AlertEvent
from notifications.outbox import enqueue


class Inbox:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, *, to: str, body: str, event: str, alert_id: str, created_at: str) -> str:
        self.sent.append(alert_id)
        return f"SM{len(self.sent):032x}"


def _replay(row: AlertEvent, event_id: str) -> None:
    db.session.execute(text("INSERT INTO alert_events (id, created_at, message_count, messages)"
                            " VALUES (:id, :created_at, :message_count, :messages)"),
                       {"id": event_id, "created_at": row.created_at.replace(tzinfo=None),
                        "message_count": row.message_count, "messages": row.messages})
    db.session.commit()


def test_an_event_written_again_after_it_was_expanded_neither_stops_the_outbox_nor_sends_twice(app, caplog):
    inbox = Inbox()
    with app.app_context():
        first = run_in_transaction(lambda: [enqueue("+12025550101", "registered", locale="en", phone="0101"),
                                            enqueue("+12025550102", "registered", locale="en", phone="0102")])
        saved = db.session.scalars(select(AlertEvent)).one()
        db.session.expunge(saved)
        db.session.rollback()
        dispatcher.dispatch_all(inbox)
        assert sorted(inbox.sent) == sorted(alert.id for alert in first)

        _replay(saved, saved.id)  # the same row again, as it was before the dispatcher took it
        # and under another id (its last character changed: an id that ended in "z" once made this the same id)
        _replay(saved, saved.id[:-1] + ("y" if saved.id.endswith("z") else "z"))
        later = run_in_transaction(lambda: enqueue("+12025550103", "registered", locale="en", phone="0103"))
        dispatcher.dispatch_all(inbox)

        assert sorted(inbox.sent) == sorted([*(alert.id for alert in first), later.id])
        assert db.session.scalars(select(AlertEvent)).all() == []
        assert len(db.session.scalars(select(Alert)).all()) == 3
    assert any(saved.id in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
