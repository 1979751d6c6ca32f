"""State changes of many users written together: one transaction and one commit a batch.

A change joins the open batch and waits; one writer (a light thread started by the
change that finds none running) takes the open batch, writes it, answers each change of
it, then takes the next, so nothing waits for a timer. An answer is always the truth: a
change whose request deadline passes while its batch is still open is withdrawn (nothing
of it is written; 503), and once its batch is taken it waits for the outcome, which the
writer's own deadline bounds. Events are published after the commit, outside that
deadline: a failure to publish never turns a committed change into an error.
"""
import logging
import threading

import sqlalchemy as sa
from flask import current_app, has_app_context

from ..deadline import DeadlineExceeded, deadline
from ..errors import APIError, unavailable
from ..events import bus
from ..threads import light_thread

log = logging.getLogger(__name__)

WAIT_SECONDS = 60  # a safety net: the writer's deadline ends a batch long before this
DEADLOCK = "40P01"  # PostgreSQL's deadlock_detected
DEADLOCK_ATTEMPTS = 3
WITHDRAWN = object()  # an item whose request gave up before its batch was taken


class Batch:
    """Items written by one transaction, and their outcome once it is known."""

    __slots__ = ("items", "taken", "done", "results", "error")

    def __init__(self):
        self.items = []
        self.taken = False  # the writer has it: its items can no longer be withdrawn
        self.done = threading.Event()
        self.results = None
        self.error = None


class Batcher:
    """Collects concurrent changes into batches, written one at a time by one writer.

    write(items, events) writes the items in one transaction (appending the events it
    makes, to be published once it has committed) and returns one result per item, an
    exception for an item refused on its own (raised to its caller alone)."""

    def __init__(self, write, timeout=None, observe=None):
        self.write = write
        self.timeout = timeout  # the writer's deadline for one batch, in seconds
        self.observe = observe  # called with each batch's size
        self.lock = threading.Lock()  # guards open, writing and each batch's items
        self.open = None  # the batch that items join now
        self.writing = False  # a writer runs (and will take the open batch)

    def submit(self, item):
        """Write the item with its batch; return its result once the batch committed.
        If the batch failed, its error, as a lone change would raise it (nothing of the
        item was written); 503 if the database is stuck."""
        app = current_app._get_current_object() if has_app_context() else None
        with self.lock:
            batch = self.open
            if batch is None:
                batch = self.open = Batch()
            index = len(batch.items)
            batch.items.append(item)
            start, self.writing = not self.writing, True
        if start:
            light_thread(lambda: self._run(app), "saathii-batch-writer").start()
        self._wait(batch, index)
        if batch.error is not None:
            if isinstance(batch.error, Exception):
                raise batch.error  # each of its requests answered as a lone one would be
            raise unavailable() from batch.error
        result = batch.results[index]
        if isinstance(result, Exception):
            raise result
        return result

    def _wait(self, batch, index):
        """Wait for the batch's outcome, or withdraw the item if it is still open."""
        try:
            if batch.done.wait(WAIT_SECONDS):
                return
        except DeadlineExceeded:
            if self._withdraw(batch, index):
                raise
            # Being written: answering 503 now could deny a change that commits.
            if batch.done.wait(WAIT_SECONDS):
                return
            raise
        except BaseException:
            self._withdraw(batch, index)
            raise
        self._withdraw(batch, index)
        raise unavailable()

    def _withdraw(self, batch, index):
        """Take the item out of its batch unless the writer has it; whether it was."""
        with self.lock:
            if batch.taken:
                return False
            batch.items[index] = WITHDRAWN
            return True

    def _run(self, app):
        """The writer: write open batches until none is left."""
        try:
            if app is None:
                self._drain()
            else:
                with app.app_context():
                    self._drain()
        except BaseException:
            # The writer itself was killed: the open batch fails (nothing of it was
            # written) rather than waiting for a writer that never comes.
            with self.lock:
                left, self.open = self.open, None
                self.writing = False
            if left is not None:
                left.error = unavailable()
                left.done.set()
            raise

    def _drain(self):
        while True:
            with self.lock:
                batch, self.open = self.open, None
                if batch is None:
                    self.writing = False
                    return
                batch.taken = True
            self._write(batch)

    def _write(self, batch):
        """Write a taken batch, answer its items, then publish what it changed."""
        live = [index for index, item in enumerate(batch.items) if item is not WITHDRAWN]
        written, events = (), ()
        try:
            if self.observe is not None:
                self.observe(len(live))
            if live:
                with deadline(self.timeout, "batch"):
                    written, events = self._written([batch.items[i] for i in live])
            results = [None] * len(batch.items)
            for index, result in zip(live, written):
                results[index] = result
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
        for event in events:
            try:
                bus().publish(event)
            except Exception:  # noqa: BLE001 - committed: the change stands, logged
                log.exception("publishing a committed event failed")

    def _written(self, items):
        """(results, events) of write(items), run again if PostgreSQL chose it as a
        deadlock's victim (batches lock many users' rows, statement by statement): it
        rolled back whole, nothing of it was published, so running it again changes and
        announces each thing once."""
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


def app_batcher(key, make):
    """The app's batcher stored under key, made by make(timeout) the first time (the
    writer's deadline: REQUEST_TIMEOUT_SECONDS, as a request's)."""
    extensions = current_app.extensions
    found = extensions.get(key)
    if found is None:
        found = extensions.setdefault(
            key, make(current_app.config.get("REQUEST_TIMEOUT_SECONDS")))
    return found
