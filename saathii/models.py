"""Database models: users, their presence status, and favorites."""
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .clock import clock
from .extensions import db

# BIGINT ids on PostgreSQL; SQLite needs INTEGER for an auto-incrementing rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def naive_utc(value):
    """A datetime as the models store it: naive, in UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def aware_utc(value):
    """A datetime as stored (naive UTC) or already aware, as an aware UTC one."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """Stores naive UTC, returns aware UTC, whatever the backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return naive_utc(value)

    def process_result_value(self, value, dialect):
        return aware_utc(value)


def _now():
    return clock.now()


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint("role IN ('listener', 'customer')", name="role"),
        sa.CheckConstraint("sex IS NULL OR sex IN ('male', 'female')", name="sex"),
        sa.CheckConstraint("rating IS NULL OR (rating >= 0 AND rating <= 5)", name="rating"),
        # Ids are never reused, on SQLite too (a deleted user's id stays retired).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    sex: Mapped[str | None] = mapped_column(sa.String(16))
    bio: Mapped[str | None] = mapped_column(sa.Text)
    interests: Mapped[list] = mapped_column(sa.JSON, default=list)
    profile_image_url: Mapped[str | None] = mapped_column(sa.String(2048))
    preferred_language: Mapped[str | None] = mapped_column(sa.String(32))
    rating: Mapped[float | None] = mapped_column(sa.Float)
    country: Mapped[str | None] = mapped_column(sa.String(64))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    # Moves with every change to the user's favorites: keys their cached list counts.
    favorites_version: Mapped[int] = mapped_column(sa.Integer, server_default="0")

    status: Mapped["UserStatus"] = relationship(
        back_populates="user", uselist=False, cascade="all, delete-orphan"
    )

    @property
    def is_listener(self):
        return self.role == "listener"

    def __repr__(self):
        return f"<User {self.id} {self.username}>"


class UserStatus(db.Model):
    __tablename__ = "user_status"
    __table_args__ = (
        sa.CheckConstraint("wait_time IS NULL OR wait_time >= 0", name="wait_time"),
        sa.CheckConstraint("is_online OR NOT is_busy", name="busy_needs_online"),
        sa.CheckConstraint("is_busy OR wait_time IS NULL", name="wait_time_needs_busy"),
        # Serves the sweeper's "online and last_seen older than X" without a table scan.
        # (SQLite matches a partial index only on the very term the query writes.)
        sa.Index(
            "ix_user_status_online_last_seen", "last_seen",
            postgresql_where=sa.text("is_online"), sqlite_where=sa.text("is_online = 1"),
        ),
        sa.Index(
            "ix_user_status_busy_since", "busy_since",
            postgresql_where=sa.text("is_busy"), sqlite_where=sa.text("is_busy = 1"),
        ),
    )

    user_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    is_online: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    is_busy: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    wait_time: Mapped[int | None] = mapped_column(sa.Integer)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    busy_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    # Every update checks and bumps it, so concurrent changes cannot mix into a bad state.
    version: Mapped[int] = mapped_column(sa.Integer, server_default="1")

    user: Mapped[User] = relationship(back_populates="status")

    __mapper_args__ = {"version_id_col": version}

    @property
    def is_available(self):
        return bool(self.is_online and not self.is_busy)


class Favorite(db.Model):
    __tablename__ = "favorites"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "listener_id", name="uq_favorites_user_listener"),
        sa.CheckConstraint("user_id <> listener_id", name="not_self"),
        # "My favorites, newest first" walks this index backwards.
        sa.Index("ix_favorites_user_id_id", "user_id", "id"),
        sa.Index("ix_favorites_listener_id", "listener_id"),
        # Cursor pagination needs ids that are never reused, on SQLite too.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("users.id", ondelete="CASCADE"))
    listener_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("users.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class FeedEvent(db.Model):
    """A stored feed event, replayed to a client that reconnects with ?since=<id>."""

    __tablename__ = "feed_events"
    __table_args__ = (
        sa.Index("ix_feed_events_user_id_id", "user_id", "id"),
        sa.Index("ix_feed_events_created_at", "created_at"),
        # Replay with ?since= needs ids that are never reused, on SQLite too.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The recipient: the listener a favorite event is about.
    user_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(32))
    data: Mapped[dict] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class RelayMessage(db.Model):
    """Events too large for one PostgreSQL notification: the notification names the row."""

    __tablename__ = "relay_messages"
    __table_args__ = (sa.Index("ix_relay_messages_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    payload: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)


class SchedulerLease(db.Model):
    """Who runs a periodic job right now: one holder at a time, across all processes."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SocketProcess(db.Model):
    """A process holding feed sockets, alive while its lease runs (socket presence)."""

    __tablename__ = "socket_processes"

    process: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    # Its last sign of life: a user it held who was seen after this was seen elsewhere.
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # It closed its sockets to stop: it holds no one any more, its lease only times the
    # hand-over (its users not back by then are taken offline).
    stopping: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class HeldSocket(db.Model):
    """A user holding at least one feed socket in a process (socket presence)."""

    __tablename__ = "held_sockets"
    __table_args__ = (sa.Index("ix_held_sockets_process", "process"),)

    user_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    process: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
