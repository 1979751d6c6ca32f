"""Presence: who is online, busy or available, and the one place that changes it."""
import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ..clock import clock, isoformat
from ..errors import APIError, bad_request, not_found, unauthorized
from ..fields import is_id
from ..events import Event
from ..models import User, UserStatus, naive_utc
from ..sql import in_ids, built_once, fetch_rows, upsert
from .users import Caller

MAX_BATCH = 100
MAX_ATTEMPTS = 5
WAIT_TIME_NEEDS_BUSY = "wait_time can only be set while busy"


def presence_of(status, version):
    """The public presence of a user, as other users see it, at this status version."""
    return _presence(status.user_id, status.user.username, status.is_online, status.is_busy,
                     status.wait_time, status.last_seen, version)


def _presence(user_id, username, is_online, is_busy, wait_time, last_seen, version):
    return {
        "user_id": user_id,
        "username": username,
        "is_online": bool(is_online),
        "is_busy": bool(is_busy),
        "wait_time": wait_time,
        "is_available": bool(is_online and not is_busy),
        "last_seen": isoformat(last_seen),
        "version": version,
    }


def _event_type(status, was_online, was_busy):
    if not status.user.is_listener:
        return "presence_update"
    if not status.is_online:
        return "listener_offline"
    if status.is_busy:
        return "listener_busy"
    return "listener_available" if was_online and was_busy else "listener_online"


def changed_status(status, is_online=None, is_busy=None, wait_time=..., seen=False,
                   now=None):
    """Apply a presence change to a Status and keep its rules; return the one event it
    makes, or None if the state did not change. Every change of presence, from any
    source, goes through here (and its writer publishes the event once it commits).

    The event carries the version the change is written with: one more than the
    status's (every writer moves a row's version by one a write, and a batch that
    changes a user twice counts each change: see status_updates), so that a socket
    hearing two changes out of order keeps the newer."""
    now = now or clock.now()
    version = (status.version or 0) + 1
    before = (status.is_online, status.is_busy, status.wait_time)
    online = status.is_online if is_online is None else is_online
    busy = status.is_busy if is_busy is None else is_busy
    wait = status.wait_time if wait_time is ... else wait_time
    if not online:
        busy = False  # going offline ends busy
    if not busy:
        wait = None  # ending busy clears wait_time
    if busy and not status.is_busy:
        status.busy_since = now
    elif not busy:
        status.busy_since = None
    status.is_online, status.is_busy, status.wait_time = online, busy, wait
    if seen:
        status.last_seen = now
    if (online, busy, wait) != before:
        status.updated_at = now
        return Event(_event_type(status, before[0], before[1]), presence_of(status, version),
                     subject_id=status.user_id, timestamp=now)
    if seen:
        status.updated_at = now
    return None


def status_rows():
    """A SELECT of status rows joined to their users, each row what a Status is made of,
    in its order (every reader of Statuses adds its own WHERE)."""
    return sa.select(
        UserStatus.user_id, UserStatus.is_online, UserStatus.is_busy, UserStatus.wait_time,
        UserStatus.busy_since, UserStatus.last_seen, UserStatus.created_at,
        UserStatus.updated_at, UserStatus.version, User.username, User.role,
    ).join(User, User.id == UserStatus.user_id)


class Status:
    """A status row read as plain values by a batched writer, changed by changed_status."""

    __slots__ = ("user_id", "is_online", "is_busy", "wait_time", "busy_since", "last_seen",
                 "created_at", "updated_at", "version", "user")

    def __init__(self, user_id, is_online, is_busy, wait_time, busy_since, last_seen,
                 created_at, updated_at, version, username, role):
        self.user_id, self.is_online, self.is_busy = user_id, is_online, is_busy
        self.wait_time, self.busy_since, self.last_seen = wait_time, busy_since, last_seen
        self.created_at, self.updated_at, self.version = created_at, updated_at, version
        self.user = Caller(user_id, username, role)

    def values(self):
        """What status_schema shows of it."""
        return {"user_id": self.user_id, "is_online": self.is_online,
                "is_busy": self.is_busy, "wait_time": self.wait_time,
                "last_seen": self.last_seen, "created_at": self.created_at,
                "updated_at": self.updated_at, "version": self.version}


def arrival(user_id, username, role, created_at, now, version):
    """The event of an offline user's beat that brought them online (see beats), which
    wrote the row's `version`."""
    status = Status(user_id, False, False, None, None, None, created_at, None, version - 1,
                    username, role)
    return changed_status(status, is_online=True, seen=True, now=now)


def check_update(changes):
    """Refuse a status update that is empty or contradicts itself (400)."""
    if not changes:
        raise bad_request("No status fields to update")
    is_online, is_busy = changes.get("is_online"), changes.get("is_busy")
    # Updates that contradict themselves (the OpenAPI schema forbids them too).
    if is_online is False and is_busy:
        raise bad_request("A user who is offline cannot be busy")
    if changes.get("wait_time") is not None and (is_busy is False or is_online is False):
        raise bad_request(WAIT_TIME_NEEDS_BUSY)


def apply_update(status, changes, now):
    """Apply a client's status update to a Status by the rules (409 if wait_time is given
    to a user who does not stay busy); return the event it makes, or None."""
    is_online, is_busy = changes.get("is_online"), changes.get("is_busy")
    if is_busy and is_online is None:
        is_online = True  # going busy means being in the app
    ends_busy = is_busy is False or is_online is False
    stays_busy = is_busy or (status.is_busy and not ends_busy)
    if changes.get("wait_time") is not None and not stays_busy:
        # A fine request, but not for a user who is not busy now.
        raise APIError(409, WAIT_TIME_NEEDS_BUSY)
    return changed_status(status, is_online=is_online, is_busy=is_busy,
                          wait_time=changes.get("wait_time", ...), seen=True, now=now)


@built_once
def _own_status_statement():
    """The active user :user's status row (no row: none, or no active account)."""
    return status_rows().where(UserStatus.user_id == sa.bindparam("user"),
                               User.is_active == sa.true())


def own_status(user_id):
    """The user's own status (a Status), or None if they have no status row or no active
    account."""
    rows = fetch_rows(_own_status_statement(), {"user": user_id})
    return Status(*rows[0]) if rows else None


@built_once
def _missing_statuses_statement():
    """An offline status row for each active user among :ids who has none."""
    now = sa.bindparam("now", type_=UserStatus.created_at.type)
    users = (sa.select(User.id, sa.false(), sa.false(), now, now, sa.literal(1))
             .where(in_ids(User.id, "ids"), User.is_active == sa.true()))
    return (upsert(UserStatus)
            .from_select(["user_id", "is_online", "is_busy", "created_at", "updated_at",
                          "version"], users)
            .on_conflict_do_nothing(index_elements=["user_id"])
            .returning(UserStatus.user_id))


def add_missing_statuses(connection, user_ids, now):
    """In a writer's transaction: give the active users among user_ids who have no status
    row an offline one (every user is created with one; rows removed by hand or imported
    without one are made on their first change); the ids given one."""
    return {row[0] for row in connection.execute(
        _missing_statuses_statement(), {"ids": sorted(user_ids), "now": now})}


@built_once
def _presence_statement():
    """The presence of the active users among :ids, joined to the caller's account: no
    row at all when the caller's account is gone, one empty row when none is found."""
    found = (
        sa.select(UserStatus.user_id, User.username, UserStatus.is_online,
                  UserStatus.is_busy, UserStatus.wait_time, UserStatus.last_seen,
                  UserStatus.version)
        .join(User, User.id == UserStatus.user_id)
        .where(in_ids(UserStatus.user_id, "ids"), User.is_active == sa.true())
        .subquery("found")
    )
    caller = aliased(User, name="caller")
    return (
        sa.select(*found.c).select_from(caller).outerjoin(found, sa.true())
        .where(caller.id == sa.bindparam("caller"), caller.is_active == sa.true())
        .order_by(found.c.user_id)
    )


def _presences(caller_id, user_ids):
    rows = fetch_rows(_presence_statement(), {"caller": caller_id, "ids": list(user_ids)})
    if not rows:
        raise unauthorized()
    return [_presence(*row) for row in rows if row[0] is not None]


@built_once
def _written_since_statement():
    """Active users' status rows written at or after :since, after user :after, in user
    id order, :limit of them."""
    return (
        status_rows()
        .where(UserStatus.updated_at >= sa.bindparam("since"),
               UserStatus.user_id > sa.bindparam("after"), User.is_active == sa.true())
        .order_by(UserStatus.user_id).limit(sa.bindparam("limit"))
    )


def presence_written_since(since, after_user_id, limit):
    """Events carrying the current presence (and version) of the active users whose status
    was written at or after a time: a page of at most `limit`, after a user id, in id
    order (what a process that missed other processes' events sends its sockets again)."""
    rows = fetch_rows(_written_since_statement(),
                      {"since": naive_utc(since), "after": after_user_id, "limit": limit})
    events = []
    for row in rows:
        status = Status(*row)
        # Its state, not a change: a listener online and not busy is "available".
        events.append(Event(_event_type(status, True, True), presence_of(status, status.version),
                            subject_id=status.user_id, timestamp=status.updated_at))
    return events


def presence_for(caller_id, user_id):
    """The presence of one user, or 404 (401 if the caller's account is gone)."""
    found = _presences(caller_id, [user_id])
    if not found:
        raise not_found("User status not found")
    return found[0]


def parse_user_ids(raw):
    """Parse a comma-separated list of user ids, as the batch look-up takes it."""
    parts = [part.strip() for part in (raw or "").split(",")]
    if not all(is_id(part) for part in parts):
        raise bad_request("Invalid user IDs format")
    if len(parts) > MAX_BATCH:
        raise bad_request("Too many user IDs requested")
    return sorted({int(part) for part in parts})


def presence_batch(caller_id, user_ids):
    """Presence of the known users among user_ids, ordered by user id, in one query with
    the caller's account check (401 if it is gone)."""
    return _presences(caller_id, user_ids)
