"""Socket presence in the database: which processes hold feed sockets, and whose.

Each process holding sockets keeps a lease (socket_processes: its last sign of life and
when it runs out) and a row per user it holds a socket of (held_sockets). When a user's
last socket in a process has been closed for the grace, that process takes them offline
unless a live process holds a socket of theirs or they were seen after it closed (a
socket opened anywhere beats, so a reconnect within the grace is seen). A process that
dies stops renewing: once its lease runs out, the first live process to renew its own (or
the sweeper) takes offline its users that no live process holds and nobody saw after its
last renewal. Cost: a lease upsert and a look for run-out leases every few seconds, one
INSERT a tick for the users who arrived, one transaction for those who left.
"""
from datetime import timedelta

import sqlalchemy as sa

from ..events import transaction
from ..models import HeldSocket, SocketProcess, User, UserStatus, aware_utc
from ..sql import built_once, fetch_rows, in_ids, online_by_id, upsert
from .presence import Status, changed_status, status_rows
from .status_updates import write_changes

BATCH = 500


def renew(process, now, lasts_seconds, stopping=False):
    """Renew this process's lease until now + lasts_seconds (its last sign of life: now);
    stopping: it has closed its sockets (see hand_over). Whether the lease had been lost
    (no row, or one run out: the sweeper may have taken its users offline, and their held
    rows away): then the process must hold its users again, and beat them."""
    values = {"renewed_at": now, "expires_at": now + timedelta(seconds=lasts_seconds),
              "stopping": stopping}
    statement = upsert(SocketProcess).values(process=process, **values)
    with transaction([]) as connection:
        expires = _locked_expiry(connection, process)
        connection.execute(statement.on_conflict_do_update(
            index_elements=["process"], set_=values))
    return expires is None or aware_utc(expires) <= now


@built_once
def _hold_statement():
    """Hold :ids in :process (those still users; each once)."""
    users = sa.select(User.id, sa.bindparam("process", type_=sa.String())).where(
        in_ids(User.id, "ids"))
    return (upsert(HeldSocket).from_select(["user_id", "process"], users)
            .on_conflict_do_nothing(index_elements=["user_id", "process"]))


def hold(process, user_ids):
    """Record that this process holds sockets of these users."""
    with transaction([]) as connection:
        connection.execute(_hold_statement(), {"process": process, "ids": sorted(user_ids)})


def _held_elsewhere(now):
    """Whether a live process (not one that has stopped) holds a socket of the status
    row's user."""
    return sa.exists().where(
        HeldSocket.user_id == UserStatus.user_id, SocketProcess.process == HeldSocket.process,
        SocketProcess.expires_at > now, SocketProcess.stopping == sa.false())


@built_once
def _released_statement():
    """Stop holding :ids in :process; the ids released."""
    return (sa.delete(HeldSocket)
            .where(HeldSocket.process == sa.bindparam("process", type_=sa.String()),
                   in_ids(HeldSocket.user_id, "ids"))
            .returning(HeldSocket.user_id))


@built_once
def _unheld_online_statement():
    """The online users among :ids whom no live process holds, locked."""
    now = sa.bindparam("now", type_=SocketProcess.expires_at.type)
    return (status_rows()
            .where(in_ids(UserStatus.user_id, "ids"), online_by_id(UserStatus.is_online),
                   ~_held_elsewhere(now))
            .order_by(UserStatus.user_id).with_for_update(of=UserStatus))


def _unheld(connection, user_ids, now):
    return [Status(*row) for row in connection.execute(
        _unheld_online_statement(), {"ids": sorted(user_ids), "now": now})]


def _offline_unless_seen_after(seen_before, now):
    """A change taking a user offline unless they were seen after seen_before(id)."""
    def change(status):
        if status.last_seen is not None and \
                aware_utc(status.last_seen) > seen_before(status.user_id):
            return None  # a beat, a status change or a socket elsewhere since
        return changed_status(status, is_online=False, now=now)
    return change


def release(process, departures, now):
    """The users whose last socket here closed (user id -> when): stop holding them and,
    in the same transaction, take offline those no live process holds who were not seen
    since; how many went offline."""
    def read_rows(connection):
        connection.execute(_released_statement(),
                           {"process": process, "ids": sorted(departures)}).all()
        return _unheld(connection, departures, now)

    return write_changes(read_rows, _offline_unless_seen_after(departures.__getitem__,
                                                               now))[0]


@built_once
def _dead_processes():
    return sa.select(SocketProcess.process, SocketProcess.renewed_at).where(
        SocketProcess.expires_at <= sa.bindparam("now", type_=SocketProcess.expires_at.type))


@built_once
def _release_some_statement():
    """Stop holding up to :limit users of :process; the ids released."""
    some = (sa.select(HeldSocket.user_id).where(HeldSocket.process == sa.bindparam("process"))
            .order_by(HeldSocket.user_id).limit(sa.bindparam("limit")))
    return (sa.delete(HeldSocket)
            .where(HeldSocket.process == sa.bindparam("process"),
                   HeldSocket.user_id.in_(some.scalar_subquery()))
            .returning(HeldSocket.user_id))


def _locked_expiry(connection, process):
    """When a process's lease runs out (None: it has none), its row locked until the
    commit: a renewal and the taking of its users wait for each other."""
    return connection.execute(sa.select(SocketProcess.expires_at).where(
        SocketProcess.process == process).with_for_update()).scalar()


def _still_dead(connection, process, now):
    """Lock a dead process's lease row and say whether it is still run out (one renewed
    meanwhile is alive: left alone)."""
    expires = _locked_expiry(connection, process)
    return expires is not None and aware_utc(expires) <= now


def take_orphans_offline(now):
    """For each process whose lease ran out (it died, or stopped and its clients did not
    come back): take offline the online users it held whom no live process holds and
    nobody saw after its last renewal, and forget it. How many went offline. Each batch
    locks the process's lease row first: a process that renews meanwhile finds its lease
    lost and holds (and beats) its users again."""
    total = 0
    for process, renewed_at in fetch_rows(_dead_processes(), {"now": now}):
        renewed_at = aware_utc(renewed_at)
        change = _offline_unless_seen_after(lambda _user, at=renewed_at: at, now)
        while True:
            released = []

            def read_rows(connection, process=process, released=released):
                released.clear()
                if not _still_dead(connection, process, now):
                    return []
                released.extend(row[0] for row in connection.execute(
                    _release_some_statement(), {"process": process, "limit": BATCH}))
                return _unheld(connection, released, now) if released else []

            total += write_changes(read_rows, change)[0]
            if len(released) < BATCH:
                break
        with transaction([]) as connection:
            connection.execute(sa.delete(SocketProcess).where(
                SocketProcess.process == process, SocketProcess.expires_at <= now))
    return total
