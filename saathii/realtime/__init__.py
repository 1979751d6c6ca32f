"""The real-time feed: sockets held by this process, and events relayed between processes."""
import functools

from flask import current_app

from .. import metrics
from ..events import bus
from ..extensions import db
from ..revalidation import Changes
from .guard import AccountGuard
from .hub import Hub
from .pg_relay import PostgresRelay
from .relay import RedisRelay
from .resync import resync
from .socket_presence import SocketPresence

KEY = "saathii_realtime"


class Realtime:
    """The process's hub, and the relay to other processes (config EVENT_RELAY): Redis,
    PostgreSQL's LISTEN/NOTIFY, or none."""

    def __init__(self, hub, relay=None, guard=None, reconnect_rate=None, restart_seconds=0,
                 presence=None):
        self.hub = hub
        self.presence = presence  # socket presence (PRESENCE_FROM_SOCKETS), or None
        self.relay = relay
        self.guard = guard
        self.reconnect_rate = reconnect_rate
        self.restart_seconds = restart_seconds
        self.closing = False  # stopping: new sockets are refused (503), open ones closed

    def publish(self, event):
        """Deliver a committed event here at once, and to the other processes."""
        self.hub.dispatch(event)
        if self.relay is not None:
            self.relay.publish(event)

    def listen(self, wait=2.0):
        """Make sure this process hears other processes' events (once it holds sockets,
        or from the start under gunicorn), waiting up to `wait` seconds for the relay, and
        that the sockets of deactivated accounts are closed."""
        if self.guard is not None:
            self.guard.start()
        if self.presence is not None:
            self.presence.start()
        if self.relay is not None:
            self.relay.start(wait)

    def relay_connected(self, wait=0.0):
        """Whether the relay hears other processes now (None: no relay in use). A relay not
        started yet is started, and given up to `wait` seconds to connect."""
        if self.relay is None:
            return None
        self.relay.start(wait if self.relay.thread is None else 0)
        return self.relay.connected

    def shut_down(self, reload=False):
        """The process is stopping: close every socket with 1012 (service restart), so
        clients reconnect (to another process) rather than when it is killed, each told
        when: spread over the sockets held, after the time a restarted process takes to
        answer, or from now in a reload (the new workers accept already). Sockets still
        opening are refused (until gunicorn stops accepting, within a second): a socket
        accepted now would hold the process until its graceful timeout."""
        self.closing = True  # before close_all: a socket registered after it sees this
        if self.presence is not None:
            self.presence.stop_noting()  # these closes hand the users over
        window = self.hub.close_all(1012, "Service restart", self.reconnect_rate,
                                    0 if reload else self.restart_seconds)
        if self.presence is not None:
            self.presence.hand_over(window)

    def stop(self):
        """Stop hearing other processes, and the guard."""
        if self.guard is not None:
            self.guard.stop()
        if self.presence is not None:
            self.presence.stop()
        if self.relay is not None:
            self.relay.stop()


def _relay(app, hub):
    config = app.config
    kind = config["EVENT_RELAY"]

    health = {"probe_seconds": config["RELAY_PROBE_SECONDS"],
              "stall_seconds": config["RELAY_STALL_SECONDS"],
              "recovered": functools.partial(resync, app, hub)}
    if kind == "redis":
        return RedisRelay(config["REDIS_URL"], hub, config["REDIS_CHANNEL"],
                          config["REDIS_TIMEOUT_SECONDS"], **health)
    if kind == "postgresql":
        return PostgresRelay(db.engine, hub, config["NOTIFY_CHANNEL"], **health)
    return None


def init_app(app):
    """Give the app a hub fed by its event bus, and its relay."""
    with app.app_context():
        config = app.config
        capacity = config["WORKER_CONNECTIONS"] - config["FEED_RESERVED_CONNECTIONS"]
        hub = Hub(config["FEED_MAX_SOCKETS_PER_USER"], max(0, capacity))
        metrics.socket_capacity(hub.capacity)
        relay = _relay(app, hub)
        hub.changes = Changes(config["CONDITIONAL_GET_MAX_AGE_SECONDS"], relay_epoch=(
            (lambda: relay.health.epoch) if relay is not None else (lambda: 0)))
        guard = AccountGuard(app, hub, config["FEED_ACCOUNT_CHECK_SECONDS"],
                             config["GC_FULL_COLLECT_SECONDS"])
        presence = None
        if config["PRESENCE_FROM_SOCKETS"]:
            presence = hub.presence = SocketPresence(app, hub)
        realtime = app.extensions[KEY] = Realtime(
            hub, relay, guard, config["FEED_RECONNECT_RATE"], config["FEED_RESTART_SECONDS"],
            presence)
        bus().subscribe(realtime.publish)
        if isinstance(relay, PostgresRelay):
            # It notifies inside the committing transaction.
            bus().add_transaction_writer(relay.notify_in_transaction)


def realtime():
    """The current app's Realtime."""
    return current_app.extensions[KEY]


def trusted_changes():
    """The changes this process has heard, when they are all there are (see
    revalidation): its relay carries other processes' events now, or it has no relay and
    is alone (SQLite); else None. Off with CONDITIONAL_GET_MAX_AGE_SECONDS=0."""
    if current_app.config["CONDITIONAL_GET_MAX_AGE_SECONDS"] <= 0:
        return None
    ours = realtime()
    connected = ours.relay_connected()
    if connected or (connected is None and db.engine.dialect.name == "sqlite"):
        return ours.hub.changes
    return None
