"""Heartbeats written together (group commit), through the batcher of batches.py.

A beat that arrives while a batch is being written joins the next batch; each batch is
one transaction and one commit, however many beats it holds: one UPDATE for the users
already online, one more for those it brings online (one event each). A beat is
answered only once its batch has committed, so none is ever lost (a worker dying loses
no acknowledged beat), every reader sees it at once, and the sweeper's version check
works as for a single beat. Without concurrent beats a batch holds one beat.
"""
import sqlalchemy as sa

from .. import metrics
from ..clock import clock
from ..events import transaction
from ..models import User, UserStatus
from . import in_ids, prebuilt, presence
from .batches import Batcher, app_batcher

KEY = "saathii_beats"


@prebuilt
def _beats_statement():
    active = sa.exists().where(User.id == UserStatus.user_id, User.is_active == sa.true())
    now = sa.bindparam("now", type_=UserStatus.last_seen.type)
    return (
        sa.update(UserStatus)
        .where(in_ids(UserStatus.user_id, "ids"), UserStatus.is_online == sa.true(), active)
        # The version moves too, so a sweep that read the old last_seen cannot apply.
        .values(last_seen=now, updated_at=now, version=UserStatus.version + 1)
        .returning(UserStatus.user_id)
    )


@prebuilt
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
    """Mark these users seen now, in one transaction and one commit: the active and
    online ones in one statement (no state changes: no event), then the active and
    offline ones brought online in another, one event each (appended to events).
    Whether each beat applied: not for a user with no status row or no active account."""
    now = clock.now()
    with transaction(events) as connection:
        applied = {row[0] for row in connection.execute(
            _beats_statement(), {"ids": list(user_ids), "now": now})}
        offline = set(user_ids).difference(applied)
        if offline:
            for user_id, username, role, created_at, version in connection.execute(
                    _arrivals_statement(), {"ids": sorted(offline), "now": now}):
                events.append(presence.arrival(user_id, username, role, created_at, now,
                                               version))
                applied.add(user_id)
    return [user_id in applied for user_id in user_ids]


def batcher():
    """The app's heartbeat batcher."""
    return app_batcher(KEY, lambda timeout: Batcher(
        write_beats, timeout, observe=metrics.heartbeat_batch))
