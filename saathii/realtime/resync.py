"""What a process's sockets missed while its relay was down, sent once it is back.

While the relay carries nothing, this process's sockets get its own events but not the
other processes'. Once its probes come back (or another process says it dropped events
unsent), every change made since MARGIN_SECONDS before the relay was last known good is
dispatched again: each stored favorite event as it was, each status written as its
current presence (its type from its state: offline, busy, or available). The hub routes
them as it would have: a socket's writer drops what it sent already (event ids, status
versions, and a restated presence whose state is the one it sent last: heartbeats move
versions too) and reads the store for any older event it missed, and favoriting users'
sockets follow their favorites again. Cost: the outage's changes read in pages of PAGE
rows, once per outage; nothing while the relay is up.
"""
import logging
import time
from datetime import timedelta

from ..deadline import deadline
from ..domain.presence import presence_written_since
from ..events import events_stored_since
from ..extensions import db

log = logging.getLogger(__name__)

PAGE = 500
# A change is stamped when it is made, and commits (and is relayed) later: within a
# request's deadline, or after waiting in a Redis publisher's queue.
MARGIN_SECONDS = 30
ATTEMPTS = 5


def resync(app, hub, since):
    """Dispatch to this process's sockets again what changed since a time (the relay was
    known good until then); retried while the database cannot be read."""
    since = since - timedelta(seconds=MARGIN_SECONDS)
    timeout = app.config["REQUEST_TIMEOUT_SECONDS"]
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with app.app_context():
                try:
                    favorites = _dispatch_pages(
                        hub, timeout, lambda after: events_stored_since(since, after, PAGE),
                        lambda event: event.id)
                    presences = _dispatch_pages(
                        hub, timeout, lambda after: presence_written_since(since, after, PAGE),
                        lambda event: event.subject_id, restated=True)
                finally:
                    db.session.remove()
        except Exception:  # noqa: BLE001 - the database is down too: try again shortly
            log.warning("could not send sockets what changed while the relay was down "
                        "(attempt %d of %d)", attempt, ATTEMPTS, exc_info=True)
            time.sleep(2 ** attempt)
            continue
        log.info("relay back: %d favorite events and %d presences since %s sent to "
                 "this process's sockets again", favorites, presences, since.isoformat())
        return


def _dispatch_pages(hub, timeout, page, position, restated=False):
    """Dispatch every event of a paged read; how many."""
    after, count = 0, 0
    while True:
        with deadline(timeout, "relay resync"):
            events = page(after)
        for event in events:
            hub.dispatch(event, restated)
        time.sleep(0)  # a page at a time: the worker's other greenlets run between
        count += len(events)
        if len(events) < PAGE:
            return count
        after = position(events[-1])
