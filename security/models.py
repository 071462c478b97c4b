"""Tables of the security package."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import UTCDateTime, db


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("locale IN ('zh', 'en')", name="locale_known"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    login_password_hash: Mapped[str] = mapped_column(String(255))
    payment_password_hash: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(254))
    locale: Mapped[str] = mapped_column(String(8), default="zh")
    is_staff: Mapped[bool] = mapped_column(default=False)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    # The last accepted TOTP time step: a code for this step or an earlier one is a replay.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    # When the account last moved to another number: an SMS reset of the payment password waits a while after it.
    phone_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the login password was last recovered by SMS alone: the SIM is all that proved it, so for a while after
    # it the payment password is not reset by SMS, the phone not changed and no authenticator enrolled.
    password_recovered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# One freeze per account at a time; a lifted one is kept (who was frozen when, and why, is evidence for R13).
_ACTIVE_FREEZE = "lifted_at IS NULL"


class AccountFreeze(db.Model):
    """R13: staff stop an account's money from leaving it while they look into it (``security.freezes``)."""

    __tablename__ = "account_freezes"
    __table_args__ = (
        CheckConstraint("length(reason) > 0", name="has_reason"),
        CheckConstraint("lifted_at IS NULL OR lifted_at >= frozen_at", name="lifted_after_frozen"),
        Index("uq_account_freezes_active", "user_id", unique=True, postgresql_where=text(_ACTIVE_FREEZE),
              sqlite_where=text(_ACTIVE_FREEZE)),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(200))
    frozen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Device(db.Model):
    """A client installation (the app's ``device_id``). Trusted devices log in without a code."""

    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("user_id", "device_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    device_key: Mapped[str] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(128))
    trusted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuthSession(db.Model):
    """One login on one device: a family of access and refresh tokens that rotate together."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoke_reason: Mapped[str | None] = mapped_column(String(32))

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)
    device: Mapped[Device] = relationship()


class AuthToken(db.Model):
    """A bearer token, stored only as its SHA-256. Refresh tokens are single use (``used_at``)."""

    __tablename__ = "auth_tokens"
    __table_args__ = (CheckConstraint("kind IN ('access', 'refresh')", name="kind_known"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    session_id: Mapped[str] = mapped_column(ForeignKey("auth_sessions.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)  # the hourly purge (security.retention)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    session: Mapped[AuthSession] = relationship(lazy="joined", innerjoin=True)


class SmsCode(db.Model):
    """A one-time code: hashed, bound to phone and purpose, 10 minutes, single use, at most 5 tries."""

    __tablename__ = "sms_codes"
    __table_args__ = (
        CheckConstraint("attempts >= 0 AND attempts <= 5", name="attempts_bounded"),
        Index("ix_sms_codes_lookup", "phone", "purpose", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(16))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


_EVER_LOCKED = "hard_locked OR locked_until IS NOT NULL"


class CredentialLock(db.Model):
    """Persisted ``lockout.LockState`` for one secret: (phone, "login"), (user id, "payment"), or (user id, "recover"):
    the authenticator code of a login-password recovery."""

    __tablename__ = "credential_locks"
    __table_args__ = (
        CheckConstraint("kind IN ('login', 'payment', 'recover')", name="kind_known"),
        # /metrics counts the secrets locked now (``security.metrics``) through this, not by reading the lock state
        # of everyone who ever mistyped a password; a failure that locks nothing leaves it alone.
        Index("ix_credential_locks_locked", "locked_until", postgresql_where=text(_EVER_LOCKED),
              sqlite_where=text(_EVER_LOCKED)),
    )

    subject: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    recent_failures: Mapped[list[str]] = mapped_column(JSON, default=list)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    hard_locked: Mapped[bool] = mapped_column(default=False)
