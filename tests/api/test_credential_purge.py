"""Expired bearer tokens and SMS codes are deleted a day after they expire, and sessions with them once they have
no token left (security.retention); live ones, and what reuse detection needs while a row is kept, stay."""

from sqlalchemy import func, select

from core.db import db
from security.models import AuthSession, AuthToken, SmsCode
from security.retention import purge_expired


def _tokens(app) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(select(AuthToken.kind, func.count()).group_by(AuthToken.kind)).all()
        return {kind: count for kind, count in rows}


def _sessions(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuthSession))


def _codes(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(SmsCode))


def _purge(app, **kwargs) -> int:
    with app.app_context():
        return purge_expired(**kwargs)


def _refresh(api, token: str):
    return api.client.post("/api/v1/sessions/refresh", json={"refresh_token": token, "device_id": "phone-1"})


def test_an_expired_access_token_is_deleted_a_day_after_it_expired(app, api, clock):
    account = api.register()
    assert _tokens(app) == {"access": 1, "refresh": 1}
    clock.advance(hours=24, minutes=15, seconds=-1)  # expired, but not for a whole day yet
    _purge(app)
    assert _tokens(app) == {"access": 1, "refresh": 1}
    clock.advance(seconds=2)
    assert _purge(app) == 1
    assert _tokens(app) == {"refresh": 1} and _sessions(app) == 1
    assert api.client.get("/api/v1/me", headers=account["headers"]).status_code == 401  # as before the purge
    assert _refresh(api, account["refresh_token"]).status_code == 200  # the live refresh token still works


def test_a_spent_refresh_token_kept_after_expiry_still_revokes_its_session(app, api, clock):
    account = api.register()
    first = _refresh(api, account["refresh_token"])
    assert first.status_code == 200
    clock.advance(days=30, hours=1)  # both refresh tokens expired an hour ago; their rows are kept for a day
    _purge(app)
    reused = _refresh(api, account["refresh_token"])
    assert (reused.status_code, reused.json["code"]) == (401, "refresh_token_reused")
    clock.advance(days=1)
    assert _purge(app) == 2 + 1  # the two refresh tokens, then their session (the rest went an hour ago)
    assert _sessions(app) == 0
    gone = _refresh(api, account["refresh_token"])  # deleted: refused like any unknown token
    assert gone.status_code == 401 and gone.json["code"] != "refresh_token_reused"


def test_every_token_goes_once_its_refresh_token_has_been_expired_a_day(app, api, clock):
    api.register()
    api.register()
    clock.advance(days=31, seconds=1)
    assert _purge(app) == 4 + 2 + 2  # the tokens, the two sessions left without one, the registration codes
    assert _tokens(app) == {} and _sessions(app) == 0


def test_sms_codes_go_a_day_after_they_expired_and_live_ones_stay(app, api, clock):
    api.register()  # its registration code, consumed
    clock.advance(minutes=10, hours=24, seconds=1)
    live = api.client.post("/api/v1/sms-codes", json={"phone": "+12025550187", "purpose": "register"})
    assert live.status_code == 202
    assert _codes(app) == 2
    assert _purge(app) == 1  # the registration code; its access token expired 5 minutes later: kept a while yet
    with app.app_context():
        assert db.session.scalars(select(SmsCode.phone)).all() == ["+12025550187"]


def test_a_backlog_is_deleted_in_batches(app, api, clock):
    for _ in range(3):
        api.register()
    clock.advance(days=31, seconds=1)
    assert _purge(app, batch=2) == 6 + 3 + 3  # six tokens, three sessions, three codes, two at a time
    assert _tokens(app) == {} and _sessions(app) == 0 and _codes(app) == 0


def test_the_background_worker_purges_every_hour(app):
    from app import _worker_tasks

    tasks = {task.name: task for task in _worker_tasks(app)}
    assert tasks["purge-expired-credentials"].run is purge_expired
    assert tasks["purge-expired-credentials"].every_seconds == 3600
