"""The sweeper: takes lapsed users offline and ends expired busy states, once each."""
import logging
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from .. import metrics
from ..clock import clock
from ..events import commit_session, prune_relay_messages, prune_stored_events
from ..extensions import db
from ..models import UserStatus
from .presence import change_status

log = logging.getLogger(__name__)

BATCH = 500
# Relayed batches are read within moments of their commit; this leaves a wide margin.
RELAY_RETENTION = timedelta(minutes=10)


@dataclass
class SweepResult:
    """What one sweep changed."""

    taken_offline: int = 0
    busy_ended: int = 0
    events_pruned: int = 0


def _commit_or_retry(load, change, attempts=5):
    """Load rows, change them and commit; if another writer changed one of them meanwhile,
    its version check fails, the batch (with its events) is rolled back and redone on
    fresh rows, so nothing is changed, or announced, twice. Returns the rows changed."""
    for _attempt in range(attempts):
        rows = load()
        changed = sum(1 for status in rows if change(status))
        try:
            commit_session()  # a COMMIT cut short is settled: its events published
            return changed, len(rows)
        except StaleDataError:
            db.session.rollback()
    log.warning("sweep batch kept colliding with other writers; left for the next sweep")
    return 0, 0


def _with_user(query):
    return db.session.scalars(query.options(joinedload(UserStatus.user))
                              .execution_options(populate_existing=True)).all()


def lapsed(cutoff):
    """Online users last seen before cutoff, oldest first (served by a partial index)."""
    return (sa.select(UserStatus)
            .where(UserStatus.is_online == sa.true(), UserStatus.last_seen < cutoff)
            .order_by(UserStatus.last_seen))


def take_lapsed_offline(now, timeout_seconds):
    """Mark offline every online user not seen for timeout_seconds (ending busy too)."""
    query = lapsed(now - timedelta(seconds=timeout_seconds)).limit(BATCH)

    def offline(status):
        change_status(status, is_online=False)
        return True

    total = 0
    while True:
        changed, seen = _commit_or_retry(lambda: _with_user(query), offline)
        total += changed
        if seen < BATCH:
            return total


def end_expired_busy(now, grace_seconds):
    """Make available every user busy for longer than their wait_time plus the grace."""
    # Only rows busy for at least the grace can have expired; the partial index finds them.
    candidates = (sa.select(UserStatus.user_id, UserStatus.busy_since, UserStatus.wait_time)
                  .where(UserStatus.is_busy == sa.true(), UserStatus.wait_time.is_not(None),
                         UserStatus.busy_since < now - timedelta(seconds=grace_seconds)))
    expired = [user_id for user_id, since, wait in db.session.execute(candidates)
               if since + timedelta(minutes=wait, seconds=grace_seconds) <= now]

    def available(status):
        if status.is_busy and status.wait_time is not None and status.busy_since is not None \
                and status.busy_since + timedelta(minutes=status.wait_time,
                                                  seconds=grace_seconds) <= now:
            change_status(status, is_busy=False)
            return True
        return False

    total = 0
    for start in range(0, len(expired), BATCH):
        chunk = expired[start:start + BATCH]
        query = sa.select(UserStatus).where(UserStatus.user_id.in_(chunk))
        total += _commit_or_retry(lambda: _with_user(query), available)[0]
    return total


@metrics.observed_sweep
def sweep(now=None):
    """One sweep, with the app's settings; returns what it changed."""
    config = current_app.config
    now = now or clock.now()
    result = SweepResult(
        taken_offline=take_lapsed_offline(now, config["PRESENCE_TIMEOUT_SECONDS"]),
        busy_ended=end_expired_busy(now, config["BUSY_GRACE_SECONDS"]),
    )
    retention = timedelta(hours=config["FEED_EVENT_RETENTION_HOURS"])
    result.events_pruned = prune_stored_events(now - retention)
    prune_relay_messages(now - RELAY_RETENTION)
    db.session.commit()
    if result.taken_offline or result.busy_ended:
        log.info("sweep: %s taken offline, %s no longer busy", result.taken_offline,
                 result.busy_ended)
    return result
