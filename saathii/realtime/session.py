"""One feed socket from connect to close: greeting, replay, live events, client messages."""
import logging
import select
import socket
import struct
import threading
import time

import sqlalchemy as sa

from .. import limits, metrics
from ..auth import active_caller
from ..domain import presence
from ..events import latest_event_id, stored_events
from ..extensions import db
from ..errors import APIError
from ..models import Favorite
from . import inbox, messages
from .hub import Connection, message

log = logging.getLogger(__name__)

NO_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets


class BoundedSocket:
    """A socket whose sends are whole, never interleave between threads, and give up
    (shutting the connection down) when the client has not drained them in time: a
    frozen client cannot hold its writer, or anything waiting on it, for longer."""

    def __init__(self, sock, timeout):
        self._sock = sock
        self._timeout = timeout
        self._lock = threading.Lock()

    def send(self, data):
        deadline = time.monotonic() + self._timeout
        if not self._lock.acquire(timeout=self._timeout):
            raise self._give_up()
        try:
            view = memoryview(data)
            while view:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._writable(remaining):
                    raise self._give_up()
                view = view[self._sock.send(view):]
        finally:
            self._lock.release()
        return len(data)

    def _writable(self, seconds):
        poller = select.poll()  # gevent's, under gevent: only this greenlet waits
        poller.register(self._sock.fileno(), select.POLLOUT)
        return bool(poller.poll(seconds * 1000))

    def _give_up(self):
        """Shut the connection down (the reader sees it end) and say why. Once closed it
        is reset, not ended in order: what the client never read is dropped at once
        rather than held by the kernel (megabytes) while it probes a window that stays
        shut."""
        metrics.socket_closed_slow("send_timeout")
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return TimeoutError("the client did not read what was sent in time")

    def __getattr__(self, name):
        return getattr(self._sock, name)


def favorite_listener_ids(user_id):
    """The listeners a user has favorited."""
    return db.session.scalars(sa.select(Favorite.listener_id).where(Favorite.user_id == user_id))


class FeedSession:
    """Serves one authenticated feed socket."""

    def __init__(self, ws, user_id, since, realtime, config, expires_at=None):
        ws.sock = BoundedSocket(ws.sock, config["FEED_SEND_TIMEOUT_SECONDS"])
        self.ws = ws
        self.connection = Connection(ws, user_id, config["FEED_MAX_QUEUED"], expires_at)
        inbox.install(ws, config["FEED_MESSAGES_PER_SECOND"], config["FEED_MESSAGE_BURST"],
                      lambda reason: self.connection.close(1008, reason))
        self.since = since
        self.realtime = realtime

    def run(self):
        """Greet, replay, then serve until the socket closes."""
        connection, hub = self.connection, self.realtime.hub
        self.realtime.listen()
        connection.favorites = set(favorite_listener_ids(connection.user_id))
        # Registered before the replay is read, so nothing published meanwhile is missed;
        # the writer drops live copies of events the replay already sent.
        hub.add(connection)
        try:
            # The cursor a client that came without `since` resumes from after a drop.
            latest = latest_event_id(connection.user_id)
            greeting = {"user_id": connection.user_id, "last_event_id": latest}
            since = self.since
            if since is not None and since > (latest or 0):
                # A cursor from the future (a restored database): unknown here. Say so,
                # and deliver live events from now on instead of dropping them.
                greeting["cursor_reset"] = True
                since = None
            connection.send_now(message("connection_established", greeting))
            if since is not None:
                connection.last_replayed_id = since
                for event in stored_events(connection.user_id, since):
                    connection.send_now(event.envelope())
                    connection.last_replayed_id = event.id
            db.session.close()  # hold no database connection while idle
            writer = threading.Thread(target=connection.write_loop, daemon=True,
                                      name=f"saathii-feed-writer-{connection.user_id}")
            writer.start()
            while not connection.closed:
                raw = self.ws.receive()
                if raw is None:
                    break
                self.handle(raw)
        finally:
            hub.remove(connection)
            connection.close()
            db.session.remove()

    def handle(self, raw):
        """Answer one client message."""
        connection, hub = self.connection, self.realtime.hub
        try:
            msg = messages.parse(raw)
        except ValueError as err:
            connection.deliver(message("error", {"code": "INVALID_MESSAGE", "message": str(err)}))
            return
        if msg["type"] == "ping":
            self.heartbeat()
            connection.deliver(message("pong", {}))
            return
        subscribing = msg["type"] == "subscribe"
        if "subscription" in msg:
            hub.set_feed(connection, subscribing)
        elif subscribing:
            hub.set_watched(connection, subscribed=msg["user_ids"])
        else:
            remaining = connection.subscribed - set(msg.get("user_ids", connection.subscribed))
            hub.set_watched(connection, subscribed=remaining)
        connection.deliver(message("subscription_confirmed", {
            "user_ids": sorted(connection.subscribed), "feed": connection.feed}))

    def heartbeat(self):
        """A client ping counts as a presence heartbeat, within the user's heartbeat
        budget (shared with REST heartbeats; beyond it a ping writes nothing). Written
        with concurrent beats (the batcher); an account that is gone closes the socket."""
        user_id = self.connection.user_id
        if not limits.spend("RATELIMIT_HEARTBEAT", "heartbeat", user_id):
            return
        try:
            if presence.beat(user_id):
                return
            if active_caller(user_id) is None:
                self.connection.close(1008, "Account deactivated")
                return
            presence.heartbeat(user_id)
            db.session.commit()
        except (sa.exc.SQLAlchemyError, APIError):
            db.session.rollback()
            log.warning("feed ping could not record a heartbeat for user %s", user_id,
                        exc_info=True)
        finally:
            db.session.close()
