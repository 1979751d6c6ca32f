"""Domain events: queued with the database change, published once it commits."""
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import sqlalchemy as sa
from flask import current_app

from . import commits, metrics
from .clock import clock, isoformat, parse_isoformat
from .deadline import DeadlineExceeded
from .errors import outcome_unknown
from .extensions import db
from .models import FeedEvent, RelayMessage, aware_utc, naive_utc
from .sql import built_once, fetch_rows

log = logging.getLogger(__name__)

PRESENCE_TYPES = frozenset({
    "listener_online", "listener_offline", "listener_busy", "listener_available",
    "presence_update",
})
FAVORITE_TYPES = frozenset({"favorite_added", "favorite_removed"})


@dataclass
class Event:
    """Something that happened: a favorite change or a presence change."""

    type: str
    data: dict
    # Whose presence changed (presence events) or who was favorited (favorite events).
    subject_id: int
    timestamp: datetime = field(default_factory=clock.now)
    # Set for events stored for replay (favorite events).
    id: int | None = None

    @property
    def is_presence(self):
        return self.type in PRESENCE_TYPES

    def envelope(self):
        """The message a client receives."""
        message = {"type": self.type, "data": jsonable(self.data),
                   "timestamp": isoformat(self.timestamp)}
        if self.id is not None:
            message["id"] = self.id
        return message

    def to_json(self):
        """Serialise for another process."""
        return {"type": self.type, "data": jsonable(self.data), "subject_id": self.subject_id,
                "timestamp": isoformat(self.timestamp), "id": self.id}

    @classmethod
    def from_json(cls, raw):
        """The inverse of to_json."""
        return cls(type=raw["type"], data=raw["data"], subject_id=raw["subject_id"],
                   timestamp=parse_isoformat(raw["timestamp"]),
                   id=raw.get("id"))


def jsonable(data):
    """Event data with datetimes written as ISO 8601 UTC strings."""
    return {key: isoformat(value) if isinstance(value, datetime) else value
            for key, value in data.items()}


class EventBus:
    """Delivers published events to in-process subscribers."""

    def __init__(self):
        self.subscribers = []
        self.transaction_writers = []

    def subscribe(self, callback):
        """Call callback(event) for every event published from now on."""
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def add_transaction_writer(self, callback):
        """Call callback(connection, events) inside every transaction that made events,
        just before it commits: what it writes commits, or rolls back, with the change."""
        self.transaction_writers.append(callback)

    def write_in_transaction(self, connection, events):
        """Hand a committing transaction's events to every transaction writer."""
        for callback in self.transaction_writers:
            callback(connection, events)

    def publish(self, event):
        """Deliver an event to every subscriber."""
        metrics.event_published(event.type)
        for callback in list(self.subscribers):
            callback(event)


def init_app(app):
    """Give the app its event bus."""
    app.extensions["saathii_events"] = EventBus()


def bus():
    """The current app's event bus."""
    return current_app.extensions["saathii_events"]


# Many at once (one INSERT with many rows), ids in the order given; built once (no unit
# of work for rows nobody reads back).
STORE_MANY = sa.insert(FeedEvent).returning(FeedEvent.id, sort_by_parameter_order=True)


# SQLite: a write that changes nothing takes the database's write lock at once, so no
# other writer can commit between the batch's reads and its writes.
_SQLITE_WRITE_LOCK = "UPDATE feed_events SET id = id WHERE 0"


# How long the running batch may wait for a row lock, in milliseconds (None: as long as
# its statements may run); set by domain.batches around each write.
lock_wait = ContextVar("saathii_lock_wait_ms", default=None)


@contextmanager
def transaction(events):
    """A transaction on a pooled connection of its own (not the session's), for writers
    that change many users' state at once (see domain.batches): yields the connection.
    The events appended to `events` are staged inside the transaction just before it
    commits (the caller publishes them once it has committed); a rollback drops them.
    On SQLite it holds the write lock from the start, as PostgreSQL's row locks would."""
    with db.engine.begin() as connection:
        identity = None
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql(_SQLITE_WRITE_LOCK)
        else:
            identity = commits.begin(connection, lock_wait.get() or None)
        try:
            yield connection
            if events:
                # The commit of a notifying transaction waits for the notify queue's
                # lock: a wait for the relay, not for a row, so not bounded.
                unbound_lock_waits(connection)
                bus().write_in_transaction(connection, events)
            if identity is not None:
                _commit(connection, *identity)
        finally:
            if not connection.invalidated:
                connection.info.pop(_UNBOUND, None)


def _commit(connection, xid, pid):
    """Commit (PostgreSQL). A COMMIT cut short is settled (see commits): if it committed,
    this returns as if it had not been cut; if not, the error is raised; if that cannot
    be known, outcome_unknown."""
    try:
        connection.commit()
    except (DeadlineExceeded, sa.exc.DBAPIError) as err:
        connection.invalidate()  # mid-COMMIT: of no further use
        if not _settled(err, xid, pid):
            raise


def _settled(err, xid, pid):
    """Whether a transaction whose COMMIT was cut short committed; outcome_unknown when
    that cannot be known."""
    outcome = commits.settle(db.engine, xid, pid)
    log.warning("a COMMIT was cut short (%s); transaction %s: %s", err.__class__.__name__,
                xid, outcome or "outcome unknown")
    if outcome is None:
        raise outcome_unknown() from err
    return outcome == "committed"


_UNBOUND = "saathii_lock_waits_unbound"


def unbound_lock_waits(connection):
    """From here to its commit, the transaction waits for locks without lock_wait's
    bound (brief waits that are not for rows: event ids' order, the notify queue)."""
    if lock_wait.get() and connection.dialect.name == "postgresql" \
            and not connection.info.get(_UNBOUND):
        connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
        connection.info[_UNBOUND] = True


# PostgreSQL: the rows from arrays, inserted (and so given their ids from the sequence)
# in the arrays' order.
_STORE_UNNEST = sa.text("""
INSERT INTO feed_events (user_id, type, data, created_at)
SELECT u, t, d, c FROM unnest(CAST(:users AS bigint[]), CAST(:types AS varchar[]),
                              CAST(:data AS json[]), CAST(:created AS timestamp[]))
  WITH ORDINALITY AS v(u, t, d, c, n) ORDER BY n
RETURNING id
""")


# PostgreSQL: each recipient's lock, held to the commit, taken in key order (so no two
# transactions locking the same recipients deadlock). 23207 names this use of the
# two-key form; a recipient id beyond an int4 shares a key with another: it waits more.
_LOCK_RECIPIENTS = sa.text("""
SELECT pg_advisory_xact_lock(23207, k) FROM unnest(CAST(:keys AS integer[])) AS k
""")
LOCK_KEYS = 2147483647


def store_events(connection, events):
    """Write stored events (favorite events) in one statement; give each its id.

    A recipient's events get their ids in the order their transactions commit, which is
    what replay with `since` relies on: ids come from a sequence when the row is
    inserted, and two transactions commit in either order, so on PostgreSQL each takes
    its recipients' locks first, held until it commits (this is the last write of every
    transaction that stores events, so nothing waits on it while it waits). SQLite's
    writers hold the database's write lock from their first write to their commit."""
    if not events:
        return
    if connection.dialect.name == "postgresql":
        unbound_lock_waits(connection)
        connection.execute(_LOCK_RECIPIENTS, {"keys": sorted(
            {event.subject_id % LOCK_KEYS for event in events})})
        ids = sorted(connection.execute(_STORE_UNNEST, {
            "users": [event.subject_id for event in events],
            "types": [event.type for event in events],
            "data": [orjson.dumps(jsonable(event.data)).decode() for event in events],
            "created": [naive_utc(event.timestamp) for event in events]}).scalars())
    else:
        ids = connection.execute(STORE_MANY, [
            {"user_id": event.subject_id, "type": event.type, "data": jsonable(event.data),
             "created_at": event.timestamp} for event in events]).scalars()
    for event, event_id in zip(events, ids):
        event.id = event_id


_STORED_COLUMNS = (FeedEvent.type, FeedEvent.data, FeedEvent.user_id, FeedEvent.created_at,
                   FeedEvent.id)


@built_once
def _stored_for_user(including):
    """A user's stored events after :after (or from it, including it), oldest first."""
    after = sa.bindparam("after")
    return sa.select(*_STORED_COLUMNS).where(
        FeedEvent.user_id == sa.bindparam("user"),
        FeedEvent.id >= after if including else FeedEvent.id > after,
    ).order_by(FeedEvent.id)


@built_once
def _stored_since():
    return sa.select(*_STORED_COLUMNS).where(
        FeedEvent.created_at >= sa.bindparam("since", type_=sa.DateTime()),
        FeedEvent.id > sa.bindparam("after"),
    ).order_by(FeedEvent.id).limit(sa.bindparam("limit"))


def stored_events(user_id, after_id, including=False):
    """The stored events for a user after an event id (or from it, including it),
    oldest first."""
    rows = fetch_rows(_stored_for_user(including), {"user": user_id, "after": after_id})
    return [_stored(*row) for row in rows]


def _stored(type_, data, user_id, created_at, event_id):
    return Event(type=type_, data=data, subject_id=user_id, timestamp=aware_utc(created_at),
                 id=event_id)


def events_stored_since(since, after_id, limit):
    """Stored events (every recipient's) created at or after a time: a page of at most
    `limit`, after an event id, in id order."""
    return [_stored(*row) for row in fetch_rows(_stored_since(), {
        "since": naive_utc(since), "after": after_id, "limit": limit})]


def prune_relay_messages(older_than):
    """Delete the PostgreSQL relay's batches written before a time (its listeners read
    them within moments of their commit); return how many."""
    return db.session.execute(
        sa.delete(RelayMessage).where(RelayMessage.created_at < older_than)).rowcount


def prune_stored_events(older_than):
    """Delete stored events created before a time; return how many."""
    result = db.session.execute(sa.delete(FeedEvent).where(FeedEvent.created_at < older_than))
    return result.rowcount


def publish_committed(events):
    """Publish events whose transaction has committed. A failure is logged, never raised:
    the change stands, and its request must not hear that it failed."""
    for event in events:
        try:
            bus().publish(event)
        except Exception:  # noqa: BLE001 - committed: the change stands, logged
            log.exception("publishing a committed event failed")
