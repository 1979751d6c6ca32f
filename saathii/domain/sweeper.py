"""The sweeper: takes lapsed users offline and ends expired busy states, once each."""
import logging
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from .. import metrics
from ..clock import clock
from ..events import prune_relay_messages, prune_stored_events
from ..extensions import db
from ..models import UserStatus, aware_utc, naive_utc
from ..sql import built_once, fetch_rows
from . import held_sockets
from .presence import Status, changed_status, status_rows
from .status_updates import write_changes

log = logging.getLogger(__name__)

BATCH = 500
# Relayed batches are read within moments of their commit; this leaves a wide margin.
RELAY_RETENTION = timedelta(minutes=10)


@dataclass
class SweepResult:
    """What one sweep changed."""

    taken_offline: int = 0
    orphans_offline: int = 0
    busy_ended: int = 0
    events_pruned: int = 0


def lapsed(cutoff):
    """Online users last seen before cutoff, oldest first (served by a partial index)."""
    return (status_rows()
            .where(UserStatus.is_online == sa.true(), UserStatus.last_seen < cutoff)
            .order_by(UserStatus.last_seen))


def _locked(query):
    """The rows of a query as Statuses, locked; on PostgreSQL a row another writer holds
    is skipped (it is being written now: the next sweep sees it again)."""
    query = query.with_for_update(of=UserStatus, skip_locked=True)
    return lambda connection: [Status(*row) for row in connection.execute(query)]


def take_lapsed_offline(now, timeout_seconds):
    """Mark offline every online user not seen for timeout_seconds (ending busy too)."""
    query = lapsed(now - timedelta(seconds=timeout_seconds)).limit(BATCH)
    total = 0
    while True:
        changed, seen = write_changes(_locked(query),
                               lambda status: changed_status(status, is_online=False, now=now))
        total += changed
        if seen < BATCH:
            return total


@built_once
def _busy_candidates():
    """Users busy with a wait time since before :cutoff: only rows busy for at least the
    grace can have expired (the partial index finds them)."""
    return (sa.select(UserStatus.user_id, UserStatus.busy_since, UserStatus.wait_time)
            .where(UserStatus.is_busy == sa.true(), UserStatus.wait_time.is_not(None),
                   UserStatus.busy_since < sa.bindparam("cutoff", type_=sa.DateTime())))


def end_expired_busy(now, grace_seconds):
    """Make available every user busy for longer than their wait_time plus the grace."""
    def ended(busy_since, wait_time):
        return _expired(busy_since, wait_time, now, grace_seconds)

    cutoff = naive_utc(now - timedelta(seconds=grace_seconds))
    candidates = fetch_rows(_busy_candidates(), {"cutoff": cutoff})
    expired = [user_id for user_id, since, wait in candidates if ended(since, wait)]

    def available(status):
        if status.is_busy and ended(status.busy_since, status.wait_time):
            return changed_status(status, is_busy=False, now=now)
        return None

    total = 0
    for start in range(0, len(expired), BATCH):
        chunk = expired[start:start + BATCH]
        query = status_rows().where(UserStatus.user_id.in_(chunk)).order_by(UserStatus.user_id)
        total += write_changes(_locked(query), available)[0]
    return total


def _expired(busy_since, wait_time, now, grace_seconds):
    """Whether a busy state with this wait time, begun then, has ended (and the grace)."""
    if busy_since is None or wait_time is None:
        return False
    return aware_utc(busy_since) + timedelta(minutes=wait_time, seconds=grace_seconds) <= now


@metrics.observed_sweep
def sweep(now=None):
    """One sweep, with the app's settings; returns what it changed."""
    config = current_app.config
    now = now or clock.now()
    result = SweepResult(
        taken_offline=take_lapsed_offline(now, config["PRESENCE_TIMEOUT_SECONDS"]),
        busy_ended=end_expired_busy(now, config["BUSY_GRACE_SECONDS"]),
        orphans_offline=held_sockets.take_orphans_offline(now),
    )
    retention = timedelta(hours=config["FEED_EVENT_RETENTION_HOURS"])
    result.events_pruned = prune_stored_events(now - retention)
    prune_relay_messages(now - RELAY_RETENTION)
    db.session.commit()
    if result.taken_offline or result.busy_ended or result.orphans_offline:
        log.info("sweep: %s taken offline, %s no longer busy, %s whose feed sockets' "
                 "process is gone taken offline", result.taken_offline, result.busy_ended,
                 result.orphans_offline)
    return result
