"""State changes of many users written together: one transaction and one commit a batch.

A change joins the open batch and waits; one writer (a light thread started by the
change that finds none running) takes the open batch, writes it, answers each change of
it, then takes the next, so nothing waits for a timer. The answer is the truth: a change
whose request deadline passes while its batch is still open is withdrawn (503, never
written), and once its batch is taken it waits for the outcome, which the batch's own
deadline bounds: the least time any of its requests has left (see _in_time). A deadline
that cuts the COMMIT itself short is settled from the database's record of the
transaction (events.transaction, commits). Events are published after the commit,
outside that deadline: a failure to publish never turns a committed change into an
error.

One user's row held by someone else (another process's batch, the sweeper, an outside
transaction) does not hold everyone: on PostgreSQL a batch waits BATCH_LOCK_WAIT_MS at
most for a row lock (lock_timeout); past it, its items are written one at a time, and
an item still blocked is written alone, in a thread of its own and without that limit
(its request's deadline bounds it), while the writer goes on with the next batch.
"""
import copy
import logging
import threading
import time
from contextlib import nullcontext

import sqlalchemy as sa
from flask import current_app, has_app_context

from ..deadline import DeadlineExceeded, deadline, request_deadline
from ..errors import APIError, unavailable
from ..events import lock_wait, publish_committed
from ..threads import light_thread

log = logging.getLogger(__name__)

WAIT_SECONDS = 60  # a safety net: the writer's deadline ends a batch long before this
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected
DEADLOCK_ATTEMPTS = 3
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's lock_not_available: lock_timeout passed
MAX_ALONE = 8  # blocked changes written alone at once, each waiting on its own row
MIN_WRITE_SECONDS = 0.25  # a change with less time left than this is not begun
WITHDRAWN = object()  # an item whose request gave up before its batch was taken


class Batch:
    """Items written by one transaction, and their outcome once it is known."""

    __slots__ = ("items", "deadlines", "taken", "done", "results", "error", "alone")

    def __init__(self):
        self.items = []
        self.deadlines = []  # when each item's request must be answered (None: no limit)
        self.taken = False  # the writer has it: its items can no longer be withdrawn
        self.done = threading.Event()
        self.results = None
        self.error = None
        self.alone = {}  # index -> Event: items blocked by a row lock, written alone


class Batcher:
    """Collects concurrent changes into batches, written one at a time by one writer.

    write(items, events) writes the items in one transaction (appending the events it
    makes, to be published once it has committed) and returns one result per item, an
    exception for an item refused on its own (raised to its caller alone)."""

    def __init__(self, write, timeout=None, observe=None):
        self.write = write
        self.timeout = timeout  # the writer's deadline for one batch, in seconds
        self.observe = observe  # called with each batch's size
        # A batch's wait for a row lock in ms (None: no limit); app_batcher sets it.
        self.lock_wait_ms = None
        self.alone_slots = threading.BoundedSemaphore(MAX_ALONE)
        self.lock = threading.Lock()  # guards open, writer and each batch's items
        self.open = None  # the batch that items join now
        self.writer = None  # the running writer's token: it will take the open batch

    @property
    def writing(self):
        """Whether a writer runs."""
        return self.writer is not None

    def submit(self, item):
        """Write the item with its batch; return its result once the batch committed.
        If the batch failed, its error, as a lone change would raise it (nothing of the
        item was written, unless its commit's outcome is unknown: see the module)."""
        app = current_app._get_current_object() if has_app_context() else None
        with self.lock:
            batch = self.open
            if batch is None:
                batch = self.open = Batch()
            index = len(batch.items)
            batch.items.append(item)
            batch.deadlines.append(request_deadline())
            start = self.writer is None
            if start:
                self.writer = token = object()
        if start:
            try:
                light_thread(lambda: self._run(app, token), "saathii-batch-writer").start()
            except BaseException:
                self._stopped(token)
                raise
        self._wait(batch, index)
        if index in batch.alone:  # blocked by a row lock: written on its own
            _outcome_of(batch.alone[index])
        elif batch.error is not None:
            error = copy_for_request(batch.error)
            if error is batch.error:
                raise error
            raise error from batch.error
        result = batch.results[index]
        if isinstance(result, Exception):
            raise result
        return result

    def _wait(self, batch, index):
        """Wait for the batch's outcome, or withdraw the item while the batch is open.
        Once the writer has it, wait on whatever happens: answering 503 then could deny
        a change that commits (the writer's deadline and the database's statement
        timeout bound the write)."""
        try:
            while not batch.done.wait(WAIT_SECONDS):
                if self._withdraw(batch, index):
                    raise unavailable()  # no writer came for a minute
        except DeadlineExceeded:
            if self._withdraw(batch, index):
                raise
            batch.done.wait()
        except BaseException:
            self._withdraw(batch, index)
            raise

    def _withdraw(self, batch, index):
        """Take the item out of its batch unless the writer has it; whether it was."""
        with self.lock:
            if batch.taken:
                return False
            batch.items[index] = WITHDRAWN
            return True

    def _run(self, app, token):
        """The writer: write open batches until none is left."""
        try:
            if app is None:
                self._drain()
            else:
                with app.app_context():
                    self._drain()
        except BaseException:
            self._stopped(token)
            raise

    def _drain(self):
        while True:
            with self.lock:
                batch, self.open = self.open, None
                if batch is None:
                    self.writer = None
                    return
                batch.taken = True
            self._write(batch)
            # Let the answered requests go and new changes join before the next batch is
            # taken (a switch under gevent): bigger batches, fewer commits (BENCHMARKS.md).
            time.sleep(0)

    def _stopped(self, token):
        """A writer stopped before its work was done (it could not start, or it was
        killed): if it is still the writer, the open batch fails (nothing of it was
        written) rather than waiting for a writer that never comes."""
        with self.lock:
            if self.writer is not token:
                return  # it had finished: another writer may run now
            left, self.open, self.writer = self.open, None, None
        if left is not None:
            left.error = unavailable()
            left.done.set()

    def _write(self, batch):
        """Write a taken batch, answer its items, then publish what it changed."""
        results = [None] * len(batch.items)
        live, seconds = self._in_time(batch, results)
        events = ()
        try:
            if live:
                if self.observe is not None:
                    self.observe(len(live))
                until = None if seconds is None else time.monotonic() + seconds
                with deadline(seconds, "batch"):
                    try:
                        written, events = self._write_retrying_deadlocks(
                            [batch.items[i] for i in live], self.lock_wait_ms)
                        for index, result in zip(live, written, strict=True):
                            results[index] = result
                    except sa.exc.DBAPIError as err:
                        if not _lock_timed_out(err):
                            raise
                        events = self._one_by_one(batch, live, results, until)
            batch.results = results
        except BaseException as err:  # noqa: BLE001 - every item of it learns
            if not isinstance(err, (APIError, DeadlineExceeded)):
                log.error("batch write failed: %r", err)
            batch.error = err
            events = ()
            if not isinstance(err, Exception):
                raise
        finally:
            batch.done.set()
        publish_committed(events)

    def _in_time(self, batch, results):
        """(the items to write, the batch's deadline in seconds): each request is answered
        within its own deadline, so the batch gets the shortest time any of its requests
        has left; a request with less than MIN_WRITE_SECONDS left is answered 503 now,
        unwritten, rather than hold the batch to a time no write can meet."""
        now, seconds, live = time.monotonic(), self.timeout, []
        for index, item in enumerate(batch.items):
            if item is WITHDRAWN:
                continue
            until = batch.deadlines[index]
            if until is not None and until - now < MIN_WRITE_SECONDS:
                results[index] = unavailable()
                continue
            seconds = _least(seconds, until, now)
            live.append(index)
        return live, seconds

    def _one_by_one(self, batch, live, results, until=None):
        """Write the items of a batch that waited too long for a row lock (it rolled
        back whole) one at a time, each its own transaction with the same limit, so each
        has its own outcome in results; an item blocked again is written alone, by a
        thread of its own. The events of those written here."""
        events = []
        app = current_app._get_current_object() if has_app_context() else None
        for position, index in enumerate(live):
            if until is not None and time.monotonic() >= until:
                # The batch's time is up (its deadline fires once: a COMMIT it cut and
                # that was settled as committed leaves the rest unbounded otherwise).
                for rest in live[position:]:
                    results[rest] = unavailable()
                break
            try:
                (results[index],), made = self._write_retrying_deadlocks(
                    [batch.items[index]], self.lock_wait_ms)
                events.extend(made)
            except sa.exc.DBAPIError as err:
                if not _lock_timed_out(err):
                    results[index] = err
                    continue
                self._start_alone(app, batch, index, results)
            except DeadlineExceeded:
                # The batch's time is up: this change's outcome is unknown if it was
                # committing (as for a whole batch), the rest are not written.
                for rest in live[position:]:
                    results[rest] = unavailable()
                break
            except Exception as err:  # noqa: BLE001 - this change's own failure
                results[index] = err
        return events

    def _start_alone(self, app, batch, index, results):
        """Have a blocked item written alone by a thread of its own; at most
        MAX_ALONE at once (each holds a database connection while it waits): past them,
        or if no thread starts, it is answered 503 unwritten."""
        if not self.alone_slots.acquire(blocking=False):
            results[index] = unavailable()
            return
        batch.alone[index] = threading.Event()
        try:
            light_thread(lambda: self._write_alone(app, batch, index, results),
                         "saathii-batch-alone").start()
        except Exception as err:  # noqa: BLE001 - this change alone is answered 503
            log.error("no thread for a blocked change: %r", err)
            self.alone_slots.release()
            results[index] = unavailable()
            batch.alone.pop(index).set()

    def _write_alone(self, app, batch, index, results):
        """Write one item blocked by a row lock, waiting for the lock as long as its
        deadline allows, answer it, and publish what it changed (in the app's context,
        which this thread does not inherit)."""
        try:
            with app.app_context() if app is not None else nullcontext():
                events = ()
                seconds, until = self.timeout, batch.deadlines[index]
                if until is not None:  # within its request's time, as a batch is
                    seconds = max(0.001, _least(seconds, until, time.monotonic()))  # 0: none
                try:
                    with deadline(seconds, "blocked change"):
                        (results[index],), events = self._write_retrying_deadlocks(
                            [batch.items[index]])
                except DeadlineExceeded:
                    results[index] = unavailable()
                except Exception as err:  # noqa: BLE001 - its request learns
                    results[index] = err
                finally:
                    batch.alone[index].set()
                publish_committed(events)
        finally:
            self.alone_slots.release()

    def _write_retrying_deadlocks(self, items, lock_wait_ms=None):
        """(results, events) of write(items), waiting lock_wait_ms at most for a row
        lock, run again if PostgreSQL chose it as a deadlock's victim (batches lock many
        users' rows, statement by statement): it rolled back whole, nothing of it was
        published, so running it again changes and announces each thing once."""
        token = lock_wait.set(lock_wait_ms)
        try:
            attempt = 1
            while True:
                events = []
                try:
                    return self.write(items, events), events
                except sa.exc.DBAPIError as err:
                    if getattr(err.orig, "sqlstate", None) != DEADLOCK \
                            or attempt == DEADLOCK_ATTEMPTS:
                        raise
                    attempt += 1
        finally:
            lock_wait.reset(token)


def _least(seconds, until, now):
    """The lesser of a timeout and the time from now until a deadline (None: no limit)."""
    if until is None:
        return seconds
    return until - now if seconds is None else min(seconds, until - now)


def _outcome_of(written):
    """Wait until an item written alone is answered, whatever the request's deadline
    says meanwhile: it is being written, and its own deadline bounds it."""
    try:
        written.wait()
    except DeadlineExceeded:
        written.wait()


def _lock_timed_out(err):
    return getattr(err.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


def written_again_after(err):
    """Whether a batcher writes a batch again after this error from its write: a row
    lock waited for too long (the items one by one), or a deadlock (the whole batch)."""
    return isinstance(err, sa.exc.DBAPIError) and (
        _lock_timed_out(err) or getattr(err.orig, "sqlstate", None) == DEADLOCK)


def copy_for_request(error):
    """A batch's error as one request's own exception: one object raised in many
    requests would gather all their frames in one traceback."""
    if isinstance(error, APIError):
        return APIError(error.status, error.detail, error.errors, error.headers, error.close)
    if not isinstance(error, Exception):
        return unavailable()
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception that cannot be copied
        return error


def app_batcher(key, make):
    """The app's batcher stored under key, made by make(timeout) the first time (the
    writer's deadline: REQUEST_TIMEOUT_SECONDS, as a request's)."""
    extensions = current_app.extensions
    found = extensions.get(key)
    if found is None:
        made = make(current_app.config.get("REQUEST_TIMEOUT_SECONDS"))
        made.lock_wait_ms = current_app.config.get("BATCH_LOCK_WAIT_MS") or None
        found = extensions.setdefault(key, made)
    return found
