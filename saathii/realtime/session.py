"""One feed socket from connect to close: greeting, replay, live events, client messages."""
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app
from simple_websocket import ConnectionClosed

from .. import metrics, rate_limits
from ..deadline import DeadlineExceeded, deadline, reset_on_close
from ..domain import beats
from ..sql import built_once, fetch_rows
from ..events import stored_events
from ..extensions import db
from ..errors import APIError, restarting, unavailable
from ..threads import light_thread
from ..models import Favorite, FeedEvent, User
from . import inbox, messages
from .hub import Connection, message

log = logging.getLogger(__name__)

# How long a closing socket waits for the client's half of the close handshake.
CLOSE_HANDSHAKE_SECONDS = 1.0


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

    def end(self):
        """Shut the connection down (not closed: the descriptor stays valid), waking
        whoever waits to read or write it."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self):
        """Close once no send waits on the descriptor (simple-websocket's reader closes
        it when the client leaves, maybe while the writer polls it: see wind_down)."""
        self.end()  # a waiting send wakes and fails at once
        if self._lock.acquire(timeout=self._timeout):
            self._lock.release()
        self._sock.close()

    def _give_up(self):
        """Shut the connection down (the reader sees it end) and say why. Once closed it
        is reset, not ended in order: what the client never read is dropped at once
        rather than held by the kernel (megabytes) while it probes a window that stays
        shut."""
        metrics.socket_closed_slow("send_timeout")
        reset_on_close(self._sock)
        self.end()
        return TimeoutError("the client did not read what was sent in time")

    def __getattr__(self, name):
        return getattr(self._sock, name)


def wind_down(ws, writer, send_timeout, close_wait=CLOSE_HANDSHAKE_SECONDS):
    """Wait (bounded) until a socket's writer and reader have stopped, before its
    handler returns and the server closes the descriptor.

    Under gevent a descriptor closed while another greenlet still polls it can abort the
    whole worker (libev's "I/O watcher with invalid fd" assertion, gevent issue #2100):
    the writer polls it for room to send, the reader's selector for input. The writer
    ends first (it may still owe the close frame); the reader ends by itself once the
    close handshake is done (it may still owe the answer to the client's close frame),
    or, after close_wait, when the connection is shut down (end-of-file wakes it)."""
    if writer is not None:
        writer.join(send_timeout + 1)
    ws.thread.join(close_wait)
    ws.sock.end()
    ws.thread.join(send_timeout + 1)


@built_once
def _greeting_statement():
    """The active user's favorites (one row each, or one row of NULL) and their newest
    stored event id: one query, one snapshot."""
    latest = (sa.select(sa.func.max(FeedEvent.id))
              .where(FeedEvent.user_id == sa.bindparam("user")).scalar_subquery())
    return (sa.select(latest.label("latest"), Favorite.listener_id).select_from(User)
            .outerjoin(Favorite, Favorite.user_id == User.id)
            .where(User.id == sa.bindparam("user"), User.is_active == sa.true()))


def greeting_data(user_id):
    """(listener ids the user has favorited, id of their newest stored event or None),
    or None when the account is not active."""
    rows = fetch_rows(_greeting_statement(), {"user": user_id})
    if not rows:
        return None
    return {listener for _, listener in rows if listener is not None}, rows[0][0]


@dataclass
class Registered:
    """A socket registered in the hub before its upgrade, and what its greeting says."""

    connection: Connection
    latest: int | None


def register(realtime, config, user_id, expires_at):
    """Register a socket of this user in the hub (first, with socket presence, a
    heartbeat), then read its greeting; None (and not registered) when the account is
    not active; 503 once this process is stopping; HubFull when it holds all the sockets
    it takes.

    Registered before anything is read, so nothing published meanwhile is missed: an
    event committed after the read is delivered live, one committed before it is within
    last_event_id (and in the replay); the writer drops live copies of replayed events."""
    realtime.listen()
    connection = Connection(None, user_id, config["FEED_MAX_QUEUED"], expires_at)
    hub = realtime.hub
    try:
        if config["PRESENCE_FROM_SOCKETS"]:
            # An opening socket is a heartbeat: it brings the user online and marks them
            # seen after any socket of theirs that closed (socket_presence). Before the
            # socket is added: the user's other sockets hear them come online, this
            # one's greeting says so.
            with deadline(config["REQUEST_TIMEOUT_SECONDS"], "feed heartbeat"):
                try:
                    if not beats.beat(user_id):
                        return None
                except APIError as err:
                    # A beat's unknown outcome is ours to settle (given_up below), not
                    # the opener's: its socket did not open, it tries again later.
                    if err.status == 503:
                        raise unavailable() from err
                    raise
        hub.add(connection)
    except BaseException:
        hub.given_up(user_id)  # beaten (or maybe), never held: as if it had closed
        raise
    try:
        if realtime.closing:  # after add: shut_down's close_all missed it, or closes it
            raise restarting()
        with deadline(config["REQUEST_TIMEOUT_SECONDS"], "feed greeting"):
            data = greeting_data(user_id)  # a stalled database: 503, not a hang
    except BaseException:
        hub.remove(connection)
        raise
    if data is None:
        hub.remove(connection)
        return None
    hub.set_watched(connection, favorites=data[0])
    return Registered(connection, data[1])


class FeedSession:
    """Serves one authenticated feed socket, registered before its upgrade."""

    def __init__(self, ws, registered, since, realtime, config):
        ws.sock = BoundedSocket(ws.sock, config["FEED_SEND_TIMEOUT_SECONDS"])
        self.ws = ws
        self.connection = registered.connection
        self.connection.ws = ws
        self.latest = registered.latest
        inbox.install(ws, config["FEED_MESSAGES_PER_SECOND"], config["FEED_MESSAGE_BURST"],
                      lambda reason: self.connection.close(1008, reason))
        self.since = since
        self.realtime = realtime
        self.timeout = config["REQUEST_TIMEOUT_SECONDS"]
        self.send_timeout = config["FEED_SEND_TIMEOUT_SECONDS"]
        self.writer = None
        self.app = current_app._get_current_object()  # the writer reads the store in it

    def run(self):
        """Greet, replay, then serve until the socket closes."""
        connection, hub = self.connection, self.realtime.hub
        try:
            try:
                self.greet()
            except (OSError, ConnectionClosed):  # the client left (or stalled) already
                return
            except DeadlineExceeded:  # the database stalls: come back later
                self.ws.close(1013, "Try again later")
                return
            db.session.close()  # hold no database connection while idle
            self.writer = light_thread(connection.write_loop,
                                       f"saathii-feed-writer-{connection.user_id}")
            self.writer.start()
            while not connection.closed:
                raw = self.ws.receive()
                if raw is None:
                    break
                self.handle(raw)
        finally:
            hub.remove(connection)
            connection.close()
            wind_down(self.ws, self.writer, self.send_timeout)
            db.session.remove()

    def greet(self):
        """Send the greeting, then what the client missed since its cursor."""
        connection = self.connection
        # The cursor a client that came without `since` resumes from after a drop.
        latest = self.latest
        greeting = {"user_id": connection.user_id, "last_event_id": latest}
        since, missed = self.since, ()
        if since is not None and since > (latest or 0):
            # A cursor from the future (a restored database): unknown here. Say so,
            # and deliver live events from now on instead of dropping them.
            greeting["cursor_reset"] = True
            since = None
        elif since is not None and since < (latest or 0):
            # Nothing newer than last_event_id was stored when it was read: anything
            # since then arrives live, so an up-to-date client costs no query. The
            # cursor's own event is read too: once it is gone (past the retention
            # window), events after it may be gone as well, and the client is told.
            with deadline(self.timeout, "feed replay"):
                missed = stored_events(connection.user_id, since, including=since > 0)
            if since > 0 and missed and missed[0].id == since:
                missed = missed[1:]
            elif since > 0:
                greeting["cursor_reset"] = True
        connection.send_now(message("connection_established", greeting))
        # Live events are those after the cursor (or, without one, after last_event_id).
        connection.last_event_id = since if since is not None else (latest or 0)
        for event in missed:
            connection.send_now(event.envelope())
        connection.fetch_stored = self.stored_after

    def stored_after(self, after_id):
        """The envelopes of this user's stored events after an id, oldest first (the
        socket's writer catching up: see Connection._catch_up)."""
        with self.app.app_context():
            try:
                with deadline(self.timeout, "feed catch-up"):
                    return [event.envelope() for event in stored_events(
                        self.connection.user_id, after_id)]
            finally:
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
        if not rate_limits.count_hit("RATELIMIT_HEARTBEAT", "heartbeat", user_id):
            return
        try:
            with deadline(self.timeout, "feed ping"):  # a stalled database: no hang
                if not beats.beat(user_id):
                    self.connection.close(1008, "Account deactivated")
        except (sa.exc.SQLAlchemyError, APIError, DeadlineExceeded):
            log.warning("feed ping could not record a heartbeat for user %s", user_id,
                        exc_info=True)
        finally:
            db.session.close()
