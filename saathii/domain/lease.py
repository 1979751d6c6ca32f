"""Database leases: one holder per job at a time, on SQLite and PostgreSQL alike."""
from datetime import timedelta

import sqlalchemy as sa

from ..clock import clock
from ..extensions import db
from ..models import SchedulerLease
from ..sql import upsert


def acquire(name, holder, seconds):
    """Take or renew the lease `name` for `seconds`; return whether `holder` now holds it."""
    now = clock.now()
    expires = now + timedelta(seconds=seconds)
    created = db.session.execute(
        upsert(SchedulerLease).values(name=name, holder=holder, expires_at=expires)
        .on_conflict_do_nothing(index_elements=["name"]).returning(SchedulerLease.name)
    ).scalar()
    if created is None:
        # One UPDATE decides: it matches only if the lease is ours or has run out, and
        # concurrent takers are serialised on the row, so one of them wins.
        taken = db.session.execute(
            sa.update(SchedulerLease)
            .where(SchedulerLease.name == name,
                   sa.or_(SchedulerLease.holder == holder, SchedulerLease.expires_at < now))
            .values(holder=holder, expires_at=expires)
        ).rowcount
    db.session.commit()
    return created is not None or taken == 1


def release(name, holder):
    """Give the lease up early (on a clean shutdown)."""
    db.session.execute(sa.delete(SchedulerLease).where(
        SchedulerLease.name == name, SchedulerLease.holder == holder))
    db.session.commit()
