"""Heartbeats written together (group commit), through the batcher of batches.py.

A beat that arrives while a batch is being written joins the next batch; each batch is
one transaction and one commit, however many beats it holds: one UPDATE for the users
already online, one more for those it brings online (one event each). A beat is
answered only once its batch has committed, so none is ever lost (a worker dying loses
no acknowledged beat), every reader sees it at once, and the sweeper's version check
works as for a single beat. Without concurrent beats a batch holds one beat.

On PostgreSQL the beats of online users whose rows no one holds are written first by one
statement on its own (autocommit): a second path, because a lone beat in a transaction
costs four round trips (BEGIN, its id, UPDATE, COMMIT) where this costs one, and most
beats are lone beats of online users (BENCHMARKS.md). The rest (offline users, rows
held by another writer) go through the transaction as before.
"""
import sqlalchemy as sa

from .. import metrics
from ..clock import clock
from ..deadline import DeadlineExceeded
from ..errors import APIError, outcome_unknown, unavailable
from ..events import publish_committed, transaction
from ..extensions import db
from ..models import User, UserStatus, naive_utc
from ..sql import in_ids, built_once, online_by_id, write_alone
from . import presence
from .batches import Batcher, app_batcher, copy_for_request, written_again_after

KEY = "saathii_beats"


@built_once
def _beats_statement():
    active = sa.exists().where(User.id == UserStatus.user_id, User.is_active == sa.true())
    now = sa.bindparam("now", type_=UserStatus.last_seen.type)
    return (
        sa.update(UserStatus)
        .where(in_ids(UserStatus.user_id, "ids"), online_by_id(UserStatus.is_online), active)
        # The version moves too, so a sweep that read the old last_seen cannot apply.
        .values(last_seen=now, updated_at=now, version=UserStatus.version + 1)
        .returning(UserStatus.user_id)
    )


@built_once
def _free_beats_statement():
    """PostgreSQL: the beats of :ids among active online users whose rows no other
    transaction holds (SKIP LOCKED: a held row is left to the transaction path, which
    waits for it within BATCH_LOCK_WAIT_MS); the ids written."""
    active = sa.exists().where(User.id == UserStatus.user_id, User.is_active == sa.true())
    free = (sa.select(UserStatus.user_id)
            .where(in_ids(UserStatus.user_id, "ids"), online_by_id(UserStatus.is_online), active)
            .with_for_update(skip_locked=True).cte("free"))
    now = sa.bindparam("now", type_=UserStatus.last_seen.type)
    return (
        sa.update(UserStatus)
        .where(UserStatus.user_id == free.c.user_id)
        .values(last_seen=now, updated_at=now, version=UserStatus.version + 1)
        .returning(UserStatus.user_id)
    )


@built_once
def _arrivals_statement():
    """Bring the offline among :ids online (active users only), as change_status does;
    a row some other writer brought online first no longer matches, so each arrival is
    made, and announced, once. (SQLite's RETURNING names only the updated table's
    columns: the account's are read by subqueries.)"""
    active = sa.exists().where(User.id == UserStatus.user_id, User.is_active == sa.true())
    now = sa.bindparam("now", type_=UserStatus.last_seen.type)

    def account(column):
        return sa.select(column).where(User.id == UserStatus.user_id) \
            .correlate(UserStatus).scalar_subquery()

    return (
        sa.update(UserStatus)
        .where(in_ids(UserStatus.user_id, "ids"), UserStatus.is_online == sa.false(), active)
        .values(is_online=True, is_busy=False, wait_time=None, busy_since=None,
                last_seen=now, updated_at=now, version=UserStatus.version + 1)
        .returning(UserStatus.user_id, account(User.username), account(User.role),
                   UserStatus.created_at, UserStatus.version)
    )


def write_beats(user_ids, events):
    """Mark these users seen now: the active and online ones whose rows are free by one
    autocommit statement (PostgreSQL), then the rest in one transaction: the online ones
    in one statement (no state changes: no event), the offline ones brought online in
    another, one event each (appended to events). Whether each beat applied (True, or
    the error of a beat the transaction could not write): not for a user with no active
    account."""
    now = clock.now()
    free = _write_free_beats(user_ids, now)
    written = set(free)
    rest = [user_id for user_id in user_ids if user_id not in free]
    if rest:
        try:
            _write_in_transaction(rest, now, events, written)
        except (APIError, DeadlineExceeded, sa.exc.DBAPIError) as err:
            if not free or written_again_after(err):  # then every beat is answered so
                raise
            # The free beats are written already: they are answered so, the rest with
            # the error (nothing of the transaction was written, or its outcome is
            # unknown, as the error says), and the transaction's events are dropped.
            events.clear()
            return [True if user_id in free else _answer_for(err) for user_id in user_ids]
    return [user_id in written for user_id in user_ids]


def _answer_for(err):
    """One request's own error for a beat the transaction did not write: an APIError as
    it is, anything else (a stalled or lost database) 503."""
    return copy_for_request(err) if isinstance(err, APIError) else unavailable()


def _write_free_beats(user_ids, now):
    """The ids among user_ids whose beats the autocommit statement wrote (PostgreSQL;
    elsewhere none). A statement cut short may have committed: outcome_unknown."""
    if db.engine.dialect.name != "postgresql":
        return set()
    try:
        return {row[0] for row in write_alone(
            _free_beats_statement(), {"ids": list(user_ids), "now": naive_utc(now)})}
    except DeadlineExceeded as err:
        if getattr(err, "statement_sent", True):
            raise outcome_unknown() from err
        raise
    except sa.exc.DBAPIError as err:
        if err.connection_invalidated and getattr(err, "statement_sent", True):
            raise outcome_unknown() from err
        raise


def _write_in_transaction(user_ids, now, events, applied):
    """Beats of user_ids in one transaction: online users' then arrivals (one event
    each), a user without a status row given one first; adds the ids written to
    applied. A row that another writer turned online or offline between the two
    statements matches neither: a second round writes it."""
    with transaction(events) as connection:
        left = set(user_ids)
        for _round in range(2):
            applied.update(row[0] for row in connection.execute(
                _beats_statement(), {"ids": sorted(left), "now": now}))
            left.difference_update(applied)
            if left:
                _bring_online(connection, left, now, events, applied)
                left.difference_update(applied)
            if not left or _round:
                return
            presence.add_missing_statuses(connection, left, now)


def _bring_online(connection, user_ids, now, events, applied, offline_since=None):
    """Bring the offline among user_ids online (only those taken offline at or after
    offline_since, when given), one event each; add their ids to applied."""
    statement, params = _arrivals_statement(), {"ids": sorted(user_ids), "now": now}
    if offline_since is not None:
        statement, params["since"] = _returns_statement(), offline_since
    for user_id, username, role, created_at, version in connection.execute(statement, params):
        events.append(presence.arrival(user_id, username, role, created_at, now, version))
        applied.add(user_id)


def keep_online(user_ids, now):
    """Mark the online users among user_ids seen at `now` (their feed sockets are open):
    the online half of a beat, never bringing anyone online (a user who went offline
    themselves stays so); one statement per call. The ids written. On PostgreSQL a row
    another transaction holds is skipped: its writer sets last_seen, or the next round."""
    ids = sorted(set(user_ids))
    if db.engine.dialect.name == "postgresql":
        return _write_free_beats(ids, now)
    with transaction([]) as connection:
        return {row[0] for row in connection.execute(_beats_statement(),
                                                     {"ids": ids, "now": now})}


@built_once
def _returns_statement():
    """The arrivals of :ids taken offline at or after :since (no one else's)."""
    since = sa.bindparam("since", type_=UserStatus.updated_at.type)
    return _arrivals_statement().where(UserStatus.updated_at >= since)


def bring_back(user_ids, since, chunk=1000):
    """The users of a process whose lease was lost (socket presence: their sockets are
    open): the online ones marked seen, and those taken offline at or after `since` (when
    the lease ran out: by a sweep, or a process that took it for dead, either of which
    compares its own clock with that stored expiry) brought online, one event each, in
    transactions of `chunk`. One who went offline by their own choice while the lease
    held stays offline."""
    ids = sorted(set(user_ids))
    now = clock.now()
    for start in range(0, len(ids), chunk):
        part, events = ids[start:start + chunk], []
        with transaction(events) as connection:
            seen = {row[0] for row in connection.execute(
                _beats_statement(), {"ids": part, "now": now})}
            _bring_online(connection, set(part) - seen, now, events, set(),
                          offline_since=since)
        publish_committed(events)


def beat(user_id):
    """An active user's heartbeat, written with the beats that arrive meanwhile and
    committed before it returns: an offline user comes online (one event). Whether it
    applied: False when the account is not active."""
    return batcher().submit(user_id)


def batcher():
    """The app's heartbeat batcher."""
    return app_batcher(KEY, lambda timeout: Batcher(
        write_beats, timeout, observe=metrics.heartbeat_batch))
