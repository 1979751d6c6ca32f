"""Heartbeats of users already online, written together (group commit).

A beat that arrives while another batch is being written joins the next batch; each
batch is one UPDATE and one commit, however many beats it holds. A beat is answered only
once its batch has committed, so none is ever lost (a worker dying loses no acknowledged
beat), every reader sees it at once, and the sweeper's version check works as for a
single beat. Without concurrent beats a batch holds one beat: nothing waits for a timer.
"""
import threading

import sqlalchemy as sa
from flask import current_app

from .. import metrics
from ..clock import clock
from ..errors import unavailable
from ..extensions import db
from ..models import User, UserStatus
from . import in_ids, prebuilt

KEY = "saathii_beats"
WAIT_SECONDS = 60  # a safety net: a batch commits or fails long before this


class Batch:
    """Beats written by one statement: the first to join leads it, the others wait."""

    __slots__ = ("user_ids", "led", "done", "applied", "error")

    def __init__(self):
        self.user_ids = []
        self.led = False  # a beat of it waits to write it
        self.done = threading.Event()
        self.applied = frozenset()
        self.error = None


class BeatBatcher:
    """Collects concurrent beats into batches; one batch is written at a time."""

    def __init__(self, write):
        self.write = write
        self.lock = threading.Lock()  # guards `open` and each batch's `led`
        self.writing = threading.Lock()  # held while a batch is written
        self.open = None  # the batch that beats join now

    def beat(self, user_id):
        """Record a beat once its batch commits; return whether it applied (the user is
        active and online). 503 if its batch failed or the database is stuck."""
        with self.lock:
            batch = self.open
            if batch is None:
                batch = self.open = Batch()
            batch.user_ids.append(user_id)
            lead, batch.led = not batch.led, True
        if lead:
            self._lead(batch)  # the write's own error, as it is, for its writer
        elif not batch.done.wait(WAIT_SECONDS):
            raise unavailable()
        if batch.error is not None:
            raise unavailable() from batch.error
        return user_id in batch.applied

    def _lead(self, batch):
        """Write the batch once the one before it is written. A leader that gives up
        waiting (or is killed) hands the batch to the next beat that joins it, so no
        batch is left without a writer."""
        acquired = False
        try:
            acquired = self.writing.acquire(timeout=WAIT_SECONDS)
            if not acquired:
                raise unavailable()
        finally:
            if not acquired:
                with self.lock:
                    batch.led = False
        try:
            self._write(batch)
        finally:
            self.writing.release()

    def _write(self, batch):
        with self.lock:
            if self.open is batch:
                self.open = None  # closed: later beats start the next batch
        metrics.heartbeat_batch(len(batch.user_ids))
        try:
            batch.applied = frozenset(self.write(batch.user_ids))
        except BaseException as err:  # noqa: BLE001 - every other beat of it learns
            batch.error = err
            raise
        finally:
            batch.done.set()


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


def write_beats(user_ids):
    """Mark these users seen now, those of them active and online, in one statement and
    one commit; return the ids it updated. It changes no state, so it sends no event."""
    with db.engine.begin() as connection:
        rows = connection.execute(_beats_statement(), {"ids": list(user_ids),
                                                       "now": clock.now()})
        return [row[0] for row in rows]


def batcher():
    """The app's batcher."""
    extensions = current_app.extensions
    found = extensions.get(KEY)
    if found is None:
        found = extensions.setdefault(KEY, BeatBatcher(write_beats))
    return found
