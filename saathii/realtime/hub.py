"""This process's open feed sockets, and who among them gets which event."""
import json
import logging
import queue
import threading

from ..clock import clock, isoformat

log = logging.getLogger(__name__)

# A socket whose client reads slower than this many queued messages is closed; it can
# reconnect with ?since= and read the favorite events it missed from storage.
MAX_QUEUED = 1000


def message(type_, data):
    """A server message that is not a stored event."""
    return {"type": type_, "data": data, "timestamp": isoformat(clock.now())}


class Connection:
    """One open feed socket: its user, what it watches, and its outbound queue."""

    def __init__(self, ws, user_id):
        self.ws = ws
        self.user_id = user_id
        self.favorites = set()   # listener ids the user has favorited
        self.subscribed = set()  # user ids asked for with a subscribe message
        self.feed = False        # every listener's presence
        self.outbox = queue.Queue()
        self.last_replayed_id = 0
        self.closed = False

    @property
    def watching(self):
        return self.favorites | self.subscribed

    def deliver(self, envelope, event_id=None):
        """Queue a message for this socket (never blocks the caller)."""
        if self.closed:
            return
        if self.outbox.qsize() >= MAX_QUEUED:
            log.warning("feed socket of user %s is too slow; closing it", self.user_id)
            self.close(1008, "Too slow")
            return
        self.outbox.put((envelope, event_id))

    def send_now(self, envelope):
        """Send a message from the socket's own thread."""
        self.ws.send(json.dumps(envelope))

    def write_loop(self):
        """Send queued messages until the socket closes (runs in its own thread)."""
        while not self.closed:
            item = self.outbox.get()
            if item is None:
                break
            envelope, event_id = item
            if event_id is not None and event_id <= self.last_replayed_id:
                continue  # already sent by the replay
            try:
                self.send_now(envelope)
            except Exception:  # noqa: BLE001 - any send failure means the socket is gone
                self.closed = True

    def close(self, code=1000, reason=None):
        """Close the socket and stop its writer."""
        if not self.closed:
            self.closed = True
            try:
                self.ws.close(code, reason)
            except Exception:  # noqa: BLE001 - already closed by the peer
                pass
        self.outbox.put(None)


class Hub:
    """Routes events to this process's sockets."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_user = {}
        self.watchers = {}
        self.feed = set()

    def add(self, connection):
        with self.lock:
            self.by_user.setdefault(connection.user_id, set()).add(connection)
            self._watch(connection, connection.watching, add=True)

    def remove(self, connection):
        with self.lock:
            self._discard(self.by_user, connection.user_id, connection)
            self._watch(connection, connection.watching, add=False)
            self.feed.discard(connection)

    def count(self):
        with self.lock:
            return sum(len(connections) for connections in self.by_user.values())

    def set_watched(self, connection, favorites=None, subscribed=None):
        """Replace what a connection watches (its favorites or its subscriptions)."""
        with self.lock:
            before = connection.watching
            if favorites is not None:
                connection.favorites = set(favorites)
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

    def dispatch(self, event):
        """Deliver an event to every socket of this process that should get it."""
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
        for connection in recipients:
            connection.deliver(envelope, event.id)

    def _follow_favorite_change(self, event):
        """Keep the favoriting user's sockets watching the listener they (un)favorited."""
        actor, listener_id = event.data["user_id"], event.subject_id
        for connection in self.by_user.get(actor, ()):
            before = connection.watching
            if event.type == "favorite_added":
                connection.favorites.add(listener_id)
            else:
                connection.favorites.discard(listener_id)
            self._watch(connection, connection.watching - before, add=True)
            self._watch(connection, before - connection.watching, add=False)
