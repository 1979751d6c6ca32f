"""Heartbeats written together (group commit), and the batcher other changes use too.

A beat that arrives while another batch is being written joins the next batch; each
batch is one transaction and one commit, however many beats it holds: one UPDATE for
the users already online, one more for those it brings online (one event each). A beat
is answered only once its batch has committed, so none is ever lost (a worker dying loses no acknowledged
beat), every reader sees it at once, and the sweeper's version check works as for a
single beat. Without concurrent beats a batch holds one beat: nothing waits for a timer.
"""
import threading

import sqlalchemy as sa
from flask import current_app

from ..clock import clock
from ..errors import unavailable
from ..events import transaction
from ..models import User, UserStatus
from . import in_ids, prebuilt, presence

KEY = "saathii_beats"
WAIT_SECONDS = 60  # a safety net: a batch commits or fails long before this
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected
DEADLOCK_ATTEMPTS = 3


class Batch:
    """Items written by one transaction: the first to join leads it, the others wait."""

    __slots__ = ("items", "led", "done", "results", "error")

    def __init__(self):
        self.items = []
        self.led = False  # an item of it waits to write it
        self.done = threading.Event()
        self.results = ()
        self.error = None

    @property
    def user_ids(self):
        """A beat batch's items: the ids of the users who beat."""
        return self.items


class Batcher:
    """Collects concurrent changes into batches; one batch is written at a time.

    write(items) writes a batch in one transaction and returns one result per item (an
    exception for an item refused on its own, raised to its caller alone)."""

    def __init__(self, write):
        self.write = write
        self.lock = threading.Lock()  # guards `open` and each batch's `led`
        self.writing = threading.Lock()  # held while a batch is written
        self.open = None  # the batch that items join now

    def submit(self, item):
        """Write the item with its batch; return its result once the batch committed.
        503 if its batch failed or the database is stuck."""
        with self.lock:
            batch = self.open
            if batch is None:
                batch = self.open = Batch()
            index = len(batch.items)
            batch.items.append(item)
            lead, batch.led = not batch.led, True
        if lead:
            self._lead(batch)  # the write's own error, as it is, for its writer
        elif not batch.done.wait(WAIT_SECONDS):
            raise unavailable()
        if batch.error is not None:
            raise unavailable() from batch.error
        result = batch.results[index]
        if isinstance(result, Exception):
            raise result
        return result

    def results(self, items, written):
        """One result per item from what write() returned."""
        return written

    def _lead(self, batch):
        """Write the batch once the one before it is written. A leader that gives up
        waiting (or is killed) hands the batch to the next item that joins it, so no
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
                self.open = None  # closed: later items start the next batch
        try:
            batch.results = self.results(batch.items, self._written(batch.items))
        except BaseException as err:  # noqa: BLE001 - every other item of it learns
            batch.error = err
            raise
        finally:
            batch.done.set()


    def _written(self, items):
        """write(items), run again if PostgreSQL chose it as a deadlock's victim (batches
        lock many users' rows, statement by statement): it rolled back whole, nothing
        of it was published, so running it again changes and announces each thing once."""
        attempt = 1
        while True:
            try:
                return self.write(items)
            except sa.exc.DBAPIError as err:
                if getattr(err.orig, "sqlstate", None) != DEADLOCK \
                        or attempt == DEADLOCK_ATTEMPTS:
                    raise
                attempt += 1


class BeatBatcher(Batcher):
    """Heartbeats written together: write(user_ids) returns the ids it applied."""

    def beat(self, user_id):
        """Record a beat once its batch commits; return whether it applied (the user is
        active and has a status row). 503 if its batch failed or the database is stuck."""
        return self.submit(user_id)

    def results(self, items, written):
        applied = frozenset(written)
        return [user_id in applied for user_id in items]


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
                   UserStatus.created_at)
    )


def write_beats(user_ids):
    """Mark these users seen now, in one transaction and one commit: the active and
    online ones in one statement (no state changes: no event), then the active and
    offline ones brought online in another, one event each. Returns the ids updated;
    a user with no status row is not among them."""
    now = clock.now()
    with transaction() as (connection, events):
        applied = [row[0] for row in connection.execute(
            _beats_statement(), {"ids": list(user_ids), "now": now})]
        offline = set(user_ids).difference(applied)
        if offline:
            for user_id, username, role, created_at in connection.execute(
                    _arrivals_statement(), {"ids": sorted(offline), "now": now}):
                events.append(presence.arrival(user_id, username, role, created_at, now))
                applied.append(user_id)
    return applied


def batcher():
    """The app's heartbeat batcher."""
    return _batcher(KEY, lambda: BeatBatcher(write_beats))


def app_batcher(key, make):
    """The app's batcher stored under key, made by make() the first time."""
    extensions = current_app.extensions
    found = extensions.get(key)
    if found is None:
        found = extensions.setdefault(key, make())
    return found


def batcher():
    """The app's heartbeat batcher."""
    return app_batcher(KEY, lambda: BeatBatcher(write_beats))
