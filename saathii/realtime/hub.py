"""This process's open feed sockets, and who among them gets which event.

Nothing but a socket's own writer ever sends on it: deliver() only queues, and close()
only asks the writer to close. A socket's queue keeps the newest presence per user (state,
not history: its size is bounded by the users it watches) and at most `max_queued` other
messages; past that the client is too slow, and it can replay favorite events with since.
Presence is ordered by the status version each event carries, not by arrival: a
process hears its own changes at once and other processes' through the relay, later, so
an older change can arrive after a newer one; it is dropped, never sent after it.
"""
import itertools
import json
import logging
import random
import threading
import time
from collections import OrderedDict

from .. import metrics
from ..clock import clock, isoformat

log = logging.getLogger(__name__)

MAX_VERSIONS = 1000
MAX_SOCKETS_PER_USER = 10
_opened = itertools.count()


class HubFull(Exception):
    """The process holds as many feed sockets as it takes."""


def message(type_, data):
    """A server message that is not a stored event."""
    return {"type": type_, "data": data, "timestamp": isoformat(clock.now())}


class Connection:
    """One open feed socket: its user, what it watches, and its outbound queue."""

    def __init__(self, ws, user_id, max_queued, expires_at=None):
        self.ws = ws
        self.user_id = user_id
        self.expires_at = expires_at  # the token's exp (Unix time): the socket ends then
        self.opened = next(_opened)  # the oldest of a user's sockets goes first
        self.favorites = set()   # listener ids the user has favorited
        # Until the greeting's snapshot of the favorites is in place, the user's favorite
        # changes heard meanwhile: (added, listener id), replayed onto the snapshot.
        self.unsettled = []
        self.subscribed = set()  # user ids asked for with a subscribe message
        self.feed = False        # every listener's presence
        self.max_queued = max_queued
        # key -> (envelope, event_id): a user id for presence (latest wins, in place),
        # a sequence number for anything else.
        self.pending = OrderedDict()
        # user id -> (the highest presence version queued or sent, its state), for the
        # MAX_VERSIONS users heard from last (a change arrives late by moments, not by a
        # thousand other users' changes)
        self.versions = OrderedDict()
        self.others = 0  # how many of pending are not presence
        self.sequence = itertools.count()
        self.ready = threading.Condition(threading.Lock())
        self.closing = None  # (code, reason) the writer is to close with
        self.last_event_id = 0  # the last stored event sent (replayed or live)
        # fetch_stored(after): the envelopes of the user's stored events after an id,
        # oldest first (None: send live stored events as they come).
        self.fetch_stored = None
        self.closed = False

    @property
    def open(self):
        """Neither closed nor closing."""
        return self.closing is None and not self.closed

    @property
    def watching(self):
        return self.favorites | self.subscribed

    def deliver(self, envelope, event_id=None, presence_of=None, version=None, state=None,
                restated=False):
        """Queue a message for this socket; never blocks, never sends. Presence of a user
        (presence_of) at a status version replaces that user's presence still queued,
        and is dropped if this socket was given a version as new already; a restated
        presence (a resync's) is dropped too when its state is the one given last."""
        with self.ready:
            if self.closed or self.closing:
                return
            if presence_of is not None:
                if version is not None:
                    known_version, known_state = self.versions.get(presence_of, (0, None))
                    if version <= known_version:
                        return
                    self.versions[presence_of] = (version, state)
                    self.versions.move_to_end(presence_of)
                    if len(self.versions) > MAX_VERSIONS:
                        self.versions.popitem(last=False)
                    if restated and state is not None and state == known_state:
                        return  # only heartbeats moved its version: nothing to say
                key = ("presence", presence_of)
                if key in self.pending:
                    self.pending[key] = (envelope, event_id)
                    return
            elif self.others >= self.max_queued:
                log.warning("feed socket of user %s is too slow; closing it", self.user_id)
                metrics.socket_closed_slow("queue_full")
                self.closing = (1008, "Too slow")
                self.ready.notify()
                return
            else:
                key = next(self.sequence)
                self.others += 1
            self.pending[key] = (envelope, event_id)
            self.ready.notify()

    def queued(self):
        """How many messages wait to be sent."""
        with self.ready:
            return len(self.pending)

    def send_now(self, envelope):
        """Send a message from the socket's own thread; a stored event (one with an id)
        moves the socket's cursor, last_event_id."""
        self.ws.send(json.dumps(envelope))
        if "id" in envelope:
            self.last_event_id = envelope["id"]

    def _next(self):
        """The next message to send, or None once the socket is to close."""
        with self.ready:
            while True:  # the token's expiry ends a busy socket as well as an idle one
                if self._until_expiry() == 0 and self.closing is None:
                    self.closing = (1008, "Token expired")
                if self.pending or self.closing or self.closed:
                    break
                self.ready.wait(self._until_expiry())
            if self.closing or self.closed:
                return None
            key, item = self.pending.popitem(last=False)
            if not isinstance(key, tuple):
                self.others -= 1
            return item

    def _until_expiry(self):
        """Seconds until the token expires (None: never)."""
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - time.time())

    def write_loop(self):
        """Send queued messages until the socket is to close, then close it (runs in its
        own thread; every send gives up after the socket's send timeout)."""
        while True:
            item = self._next()
            if item is None:
                break
            envelope, event_id = item
            if event_id is not None and event_id <= self.last_event_id:
                continue  # already sent (by the replay, or with a later event)
            try:
                for envelope in self._catch_up(envelope, event_id):
                    self.send_now(envelope)
            except Exception:  # noqa: BLE001 - any send failure means the socket is gone
                self.closed = True
                break
        self._finish()

    def _catch_up(self, envelope, event_id):
        """What to send for a message: for a stored event, every stored event of the
        user not sent yet, in id order. One user's ids follow the order their changes
        commit (see events.store_events), but the live copies do not arrive in it: a
        process hears its own at once and other processes' later, through the relay.
        Read from the store, none is skipped when a later one comes first (a client that
        then reconnected with its id as `since` would never get the other), and a burst
        costs one read (the copies still queued are then dropped as sent); if the store
        cannot be read, the event alone is sent."""
        if event_id is None or self.fetch_stored is None:
            return [envelope]
        try:
            return self.fetch_stored(self.last_event_id) or [envelope]
        except Exception:  # noqa: BLE001 - the database is down: the event as it came
            log.warning("feed socket of user %s: stored events could not be read; "
                        "sending event %s as it came", self.user_id, event_id, exc_info=True)
            return [envelope]

    def _finish(self):
        with self.ready:
            code, reason = self.closing or (1000, None)
            was_closed, self.closed = self.closed, True
            self.pending.clear()
        if not was_closed:
            try:
                self.ws.close(code, reason)
            except Exception:  # noqa: BLE001 - already closed by the peer
                pass
        # Wake the socket's handler: it ends without waiting for a frozen client's answer.
        self.ws.event.set()

    def close(self, code=1000, reason=None):
        """Ask the writer to close the socket (it sends the close frame, bounded by the
        send timeout); returns at once, from any thread."""
        with self.ready:
            if self.closing is None:
                self.closing = (code, reason)
            self.ready.notify()


class Hub:
    """Routes events to this process's sockets."""

    def __init__(self, max_per_user=MAX_SOCKETS_PER_USER, capacity=None):
        self.lock = threading.Lock()
        self.max_per_user = max_per_user
        self.capacity = capacity  # sockets taken before refusing (None: no limit)
        self.held = 0  # sockets in by_user
        self.refusing = False  # said in the log once when refusals begin, once when done
        self.by_user = {}
        self.watchers = {}
        self.feed = set()
        self.closing = None  # (code, reason) every socket gets, once the process stops
        # Told when a user's first socket here opens and their last one closes
        # (socket_presence.SocketPresence), under the hub's lock: it only takes notes.
        self.presence = None
        # Told of every event dispatched here (revalidation.Changes), or None.
        self.changes = None

    @property
    def full(self):
        """Whether a socket opening now would be refused."""
        return self.capacity is not None and self.held >= self.capacity

    def check_room(self):
        """Raise HubFull when a socket opening now would be refused (counted and logged as
        a refusal)."""
        with self.lock:
            self._check_room()

    def _check_room(self):
        if self.full:
            self._refusing()
            raise HubFull()

    def add(self, connection):
        """Register a socket; past max_per_user sockets of its user, close the oldest (a
        phone that reconnects is never locked out by the sockets it left behind). Raise
        HubFull, registering nothing, when the process holds its capacity."""
        with self.lock:
            self._check_room()
            sockets = self.by_user.setdefault(connection.user_id, set())
            if not sockets and self.presence is not None:
                self.presence.arrived(connection.user_id)
            sockets.add(connection)
            self.held += 1
            self._watch(connection, connection.watching, add=True)
            live = sorted((socket for socket in sockets if socket.open),
                          key=lambda socket: socket.opened)
            surplus = live[:max(0, len(live) - self.max_per_user)]
            stopping = self.closing
        for oldest in surplus:
            oldest.close(1008, "Too many sockets for this user; the oldest was closed")
        if stopping is not None:  # it came in as the process stopped
            connection.close(*stopping)

    def given_up(self, user_id):
        """A socket of this user failed to open after its heartbeat (or during it), before
        it was added: if they hold none here, it counts as their last one closing (socket
        presence)."""
        with self.lock:
            if user_id not in self.by_user and self.presence is not None:
                self.presence.departed(user_id)

    def users(self):
        """The ids of the users with a socket here."""
        with self.lock:
            return list(self.by_user)

    def holding(self, user_ids):
        """Those of user_ids with a socket here."""
        with self.lock:
            return {user_id for user_id in user_ids if user_id in self.by_user}

    def close_all(self, code, reason, reconnect_rate=None, after=0):
        """Close every socket here (their writers send the close), and any added later.
        With a reconnect_rate (sockets a second), each close's reason tells its client
        when to come back: `after` seconds, plus a delay drawn over count / rate seconds
        (a second at least), so that the clients return spread out, not all at once.
        Returns the longest delay told, in seconds."""
        with self.lock:
            self.closing = (code, reason)
            sockets = [socket for user in self.by_user.values() for socket in user]
        spread = max(1.0, len(sockets) / reconnect_rate) if reconnect_rate else 0
        for connection in sockets:
            connection.close(code, f"{reason}; reconnect in "
                             f"{round((after + random.uniform(0, spread)) * 1000)} ms"
                             if spread else reason)
        return after + spread  # the last client is told to come back by then

    def close_user(self, user_id, code, reason):
        """Close every socket of a user here (their writers send the close)."""
        with self.lock:
            sockets = list(self.by_user.get(user_id, ()))
        for connection in sockets:
            connection.close(code, reason)

    def remove(self, connection):
        """Take a socket out (once it has closed, or was never upgraded); idempotent."""
        with self.lock:
            if connection in self.by_user.get(connection.user_id, ()):
                self.held -= 1
                self._discard(self.by_user, connection.user_id, connection)
                if connection.user_id not in self.by_user and self.presence is not None:
                    self.presence.departed(connection.user_id)
            self._watch(connection, connection.watching, add=False)
            self.feed.discard(connection)
            if self.refusing and self.held <= self.capacity - max(1, self.capacity // 10):
                # Well below capacity (not one socket under it: the log would say so at
                # every close and open at the edge).
                self.refusing = False
                log.warning("feed sockets: %d of %d held; taking new sockets again",
                            self.held, self.capacity)

    def _refusing(self):
        metrics.socket_refused("full")
        if not self.refusing:
            self.refusing = True
            log.warning("feed sockets: all %d taken; refusing new sockets with 503 (REST "
                        "and health checks keep their reserved connections)", self.capacity)

    def count(self):
        """How many sockets are registered here."""
        with self.lock:
            return self.held

    def set_watched(self, connection, favorites=None, subscribed=None):
        """Replace what a connection watches (its favorites or its subscriptions).

        The first favorites given are the greeting's snapshot, read after the socket was
        added: a change heard since then may be in it or not (it committed before or
        after the read), so each is applied again on top of it, in the order heard; adding
        or removing twice is the same as once, so the socket ends watching exactly the
        committed favorites either way."""
        with self.lock:
            before = connection.watching
            if favorites is not None:
                favorites = set(favorites)
                for added, listener_id in connection.unsettled or ():
                    (favorites.add if added else favorites.discard)(listener_id)
                connection.unsettled = None
                connection.favorites = favorites
            if subscribed is not None:
                connection.subscribed = set(subscribed)
            after = connection.watching
            self._watch(connection, before - after, add=False)
            self._watch(connection, after - before, add=True)

    def set_feed(self, connection, on):
        with self.lock:
            connection.feed = on
            (self.feed.add if on else self.feed.discard)(connection)

    def _watch(self, connection, user_ids, add):
        for user_id in user_ids:
            if add:
                self.watchers.setdefault(user_id, set()).add(connection)
            else:
                self._discard(self.watchers, user_id, connection)

    @staticmethod
    def _discard(index, key, connection):
        connections = index.get(key)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del index[key]

    def dispatch(self, event, restated=False):
        """Deliver an event to every socket of this process that should get it (restated:
        a presence resent after a relay outage, see resync)."""
        if self.changes is not None:
            self.changes.heard(event)
        with self.lock:
            if event.is_presence:
                recipients = set(self.by_user.get(event.subject_id, ()))
                recipients |= self.watchers.get(event.subject_id, set())
                if event.type.startswith("listener_"):
                    recipients |= self.feed
            else:
                recipients = set(self.by_user.get(event.subject_id, ()))
                self._follow_favorite_change(event)
        envelope = event.envelope()
        presence_of = event.subject_id if event.is_presence else None
        version = state = None
        if presence_of is not None:
            data = event.data
            version = data.get("version")
            state = (data.get("is_online"), data.get("is_busy"), data.get("wait_time"))
        for connection in recipients:
            connection.deliver(envelope, event.id, presence_of, version, state, restated)
        metrics.events_delivered(len(recipients))

    def _follow_favorite_change(self, event):
        """Keep the favoriting user's sockets watching the listener they (un)favorited."""
        actor, listener_id = event.data["user_id"], event.subject_id
        for connection in self.by_user.get(actor, ()):
            if connection.unsettled is not None:  # the greeting's snapshot comes later
                connection.unsettled.append((event.type == "favorite_added", listener_id))
                continue
            before = connection.watching
            if event.type == "favorite_added":
                connection.favorites.add(listener_id)
            else:
                connection.favorites.discard(listener_id)
            self._watch(connection, connection.watching - before, add=True)
            self._watch(connection, before - connection.watching, add=False)
