"""Status updates of many users written together: one transaction per batch.

A PUT of a user's status joins the batch that forms while the previous one is being
written (see batches.Batcher): the batch's rows are read and locked in one statement, each
update applied in turn by the same rules as alone (presence.changed_status, one event per
real change), the changed rows written in one statement with the version check the
sweeper and every writer use, one commit, then the events published. An update refused
by the rules (409) refuses no other of its batch.
"""
import logging

import sqlalchemy as sa

from ..clock import clock
from ..errors import APIError, unauthorized
from ..events import publish_committed, transaction
from ..models import User, UserStatus, naive_utc
from ..sql import in_ids, built_once
from . import presence
from .batches import Batcher, app_batcher
from .presence import MAX_ATTEMPTS, Status, add_missing_statuses, apply_update, status_rows

log = logging.getLogger(__name__)

KEY = "saathii_status_updates"


def commit(user_id, changes):
    """Apply a client's status update (checked by presence.check_update) and commit it;
    return the new status (401 if the account is gone). Written with the updates of
    other users that arrive meanwhile, in one transaction (see write_updates)."""
    found = batcher().submit((user_id, changes))
    if found is None:  # no active account
        raise unauthorized()
    return found


def own_status(user_id):
    """The user's own status values (401 if the account is gone); a user without a status
    row is given one, offline."""
    status = presence.own_status(user_id)
    if status is None:
        with transaction([]) as connection:
            presence.add_missing_statuses(connection, [user_id], clock.now())
        status = presence.own_status(user_id)
        if status is None:
            raise unauthorized()
    return status.values()


def batcher():
    """The app's batcher of status updates."""
    return app_batcher(KEY, lambda timeout: Batcher(write_updates, timeout))


def _statuses_read():
    """The status rows of the active users among :ids, in id order."""
    return (
        status_rows()
        .where(in_ids(UserStatus.user_id, "ids"), User.is_active == sa.true())
        .order_by(UserStatus.user_id)
    )


@built_once
def _locked_statuses():
    """_statuses_read, the rows locked until the commit (in id order, as every batch
    locks them)."""
    return _statuses_read().with_for_update(of=UserStatus)


@built_once
def _write_status():
    """One user's new status, if its version is still the one read (the sweeper and
    every other writer check and move it too)."""
    value = {name: sa.bindparam(f"new_{name}", type_=getattr(UserStatus, name).type)
             for name in ("is_online", "is_busy", "wait_time", "busy_since", "last_seen",
                          "updated_at")}
    return (
        sa.update(UserStatus)
        .where(UserStatus.user_id == sa.bindparam("id"),
               UserStatus.version == sa.bindparam("read_version"))
        .values(**value, version=sa.bindparam("new_version", type_=UserStatus.version.type))
    )


class _Stale(Exception):
    """A row's version moved between the read and the write: the transaction is redone.
    (The rows are locked from the read, and SQLite's transaction holds its write lock,
    so this is the version rule kept, not a path taken.)"""


def write_statuses(read_rows, apply, events):
    """The one way presence is written: in one transaction, read_rows(connection) reads
    the status rows to change (locked) as Statuses; apply(found, made) changes them by
    the rules (presence.changed_status, moving each one's version by one a change and
    appending its events to made) and returns (its result, the Statuses changed); those
    rows are written in one statement with the version check, one commit, and the
    events appended to events. Redone on fresh rows if a version moved (rolled back:
    nothing is written or announced twice); 409 if that keeps happening."""
    for _attempt in range(MAX_ATTEMPTS):
        made = []
        try:
            with transaction(made) as connection:
                found = {status.user_id: status for status in read_rows(connection)}
                read_versions = {user_id: status.version for user_id, status in found.items()}
                result, changed = apply(found, made)
                if changed and not _write_versioned(connection, changed, read_versions):
                    raise _Stale()
        except _Stale:
            continue
        events.extend(made)
        return result
    raise APIError(409, "The status changed concurrently; try again")


def write_changes(read_rows, change):
    """Change the status rows read_rows(connection) reads (locked) in one transaction by
    change(status) -> event or None, through write_statuses, and publish the events once
    committed; returns (rows changed, rows read). A batch that keeps colliding with other
    writers is left alone (0, 0): its callers (the sweeper, socket presence) come again."""
    events = []

    def apply(found, made):
        changed = []
        for status in found.values():
            event = change(status)
            if event is not None:
                status.version += 1
                made.append(event)
                changed.append(status)
        return (len(changed), len(found)), changed

    try:
        result = write_statuses(read_rows, apply, events)
    except APIError:
        log.warning("a presence batch kept colliding with other writers; left for later")
        return 0, 0
    publish_committed(events)
    return result


def locked_statuses(connection, user_ids, now):
    """The status rows of the active users among user_ids, locked, as Statuses (a user
    without a row is given one, offline, first)."""
    ids = sorted(set(user_ids))
    rows = connection.execute(_locked_statuses(), {"ids": ids}).all()
    if len(rows) < len(ids):
        missing = set(ids).difference(row[0] for row in rows)
        if add_missing_statuses(connection, missing, now):
            rows = connection.execute(_locked_statuses(), {"ids": ids}).all()
    return [Status(*row) for row in rows]


def write_updates(items, events):
    """Apply (user id, changes) status updates of many users in one transaction (see
    write_statuses): each update applied in turn by the rules of changed_status (one
    event per real change). Per item: the new status values, the error refusing it, or
    None when the user has no active account."""
    now = clock.now()

    def apply(found, made):
        results, changed = [], {}
        for user_id, changes in items:
            status = found.get(user_id)
            if status is None:
                results.append(None)
                continue
            try:
                event = apply_update(status, changes, now)
            except APIError as err:
                results.append(err)
                continue
            # Each update moves the version, so that of two changes of one user in a
            # batch the later event carries the higher version.
            status.version += 1
            if event is not None:
                made.append(event)
            changed[user_id] = status
            results.append(status.values())
        return results, list(changed.values())

    return write_statuses(
        lambda connection: locked_statuses(connection, [i for i, _ in items], now),
        apply, events)


# PostgreSQL writes a batch's rows in one statement, from arrays (executemany would
# send, and run, one UPDATE per row); the version check is the same. Timestamps are
# naive UTC, as the models store them.
_WRITE_STATUSES = sa.text("""
UPDATE user_status AS s SET is_online = v.is_online, is_busy = v.is_busy,
  wait_time = v.wait_time, busy_since = v.busy_since, last_seen = v.last_seen,
  updated_at = v.updated_at, version = v.new_version
FROM unnest(CAST(:ids AS bigint[]), CAST(:versions AS integer[]), CAST(:new AS integer[]),
  CAST(:online AS boolean[]), CAST(:busy AS boolean[]), CAST(:wait AS integer[]),
  CAST(:since AS timestamp[]), CAST(:seen AS timestamp[]), CAST(:updated AS timestamp[]))
  AS v(user_id, read_version, new_version, is_online, is_busy, wait_time, busy_since, last_seen,
       updated_at)
WHERE s.user_id = v.user_id AND s.version = v.read_version
""")


def _write_versioned(connection, statuses, read_versions):
    """Write the changed rows (each with its new version); whether every one still had
    the version read."""
    statuses = list(statuses)
    if connection.dialect.name == "postgresql":
        result = connection.execute(_WRITE_STATUSES, {
            "ids": [s.user_id for s in statuses],
            "versions": [read_versions[s.user_id] for s in statuses],
            "new": [s.version for s in statuses],
            "online": [s.is_online for s in statuses], "busy": [s.is_busy for s in statuses],
            "wait": [s.wait_time for s in statuses],
            "since": [naive_utc(s.busy_since) for s in statuses],
            "seen": [naive_utc(s.last_seen) for s in statuses],
            "updated": [naive_utc(s.updated_at) for s in statuses]})
        return result.rowcount == len(statuses)
    params = [{"id": s.user_id, "read_version": read_versions[s.user_id],
               "new_version": s.version, "new_is_online": s.is_online,
               "new_is_busy": s.is_busy, "new_wait_time": s.wait_time,
               "new_busy_since": s.busy_since, "new_last_seen": s.last_seen,
               "new_updated_at": s.updated_at} for s in statuses]
    result = connection.execute(_write_status(), params)
    return not connection.dialect.supports_sane_multi_rowcount \
        or result.rowcount == len(params)
