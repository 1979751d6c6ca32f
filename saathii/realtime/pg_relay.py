"""Events between processes through PostgreSQL's LISTEN/NOTIFY, when there is no Redis.

A transaction that emits events notifies them on the deployment's channel just before it
commits, so every listening process gets them if and only if the change commits, in
commit order. Each process holds one listening connection outside the pool and hands
other processes' events to its own hub (its own it delivered itself after the commit).
A batch too large for one notification (8,000 bytes) is written to relay_messages in the
same transaction, and the notification names its row. Cost: one statement per committing
transaction that emitted events; PostgreSQL serialises notifying commits on one lock.
Its health is heard through itself (probe.RelayHealth): each process notifies a probe
from a second connection of its own and hears it on the listening one, so a stalled
listener is noticed, not only a closed one.
"""
import logging
import os
import threading
import uuid

import orjson
import psycopg
import sqlalchemy as sa
from psycopg import sql

from ..clock import clock
from ..database import CONNECT_OPTIONS
from ..events import Event
from ..models import RelayMessage
from .probe import RelayHealth, RelayStalled

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 7999  # NOTIFY takes payloads shorter than 8,000 bytes
MAX_BACKOFF_SECONDS = 5  # a relay back is a relay used within seconds
POLL_SECONDS = 1.0  # how often the listener looks up from its socket (to stop, say)
# How an operator finds the listeners in pg_stat_activity: saathii-relay:<process id>
# (and their probes' connections: saathii-relay-probe:<process id>).
APPLICATION_NAME = "saathii-relay"
PROBE_APPLICATION_NAME = "saathii-relay-probe"
NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
STORE = sa.insert(RelayMessage).returning(RelayMessage.id)
LOAD = sa.select(RelayMessage.payload).where(RelayMessage.id == sa.bindparam("id"))


def conninfo(url):
    """The libpq connection string of a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresRelay:
    """Notifies this process's events in their transactions; delivers other processes'
    notified events to the hub."""

    def __init__(self, engine, hub, channel, probe_seconds=2, stall_seconds=6, recovered=None):
        self.engine = engine
        self.hub = hub
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.health = RelayHealth("PostgreSQL", self._send_probe, probe_seconds,
                                  stall_seconds, recovered)
        # The probes' own connection, outside the pool: a pool busy serving requests
        # must not make the relay look stalled.
        self.probe_connection = None
        self.probing = threading.Lock()  # the probe connection: used by one at a time
        self.stopping = threading.Event()
        self.thread = None
        self.lock = threading.Lock()

    def notify_in_transaction(self, connection, events):
        """Notify a committing transaction's events inside it (an EventBus transaction
        writer)."""
        payload = orjson.dumps({"origin": self.origin,
                                "events": [event.to_json() for event in events]})
        if len(payload) > MAX_PAYLOAD_BYTES:
            ref = connection.execute(STORE, {"payload": payload.decode(),
                                             "created_at": clock.now()}).scalar_one()
            payload = orjson.dumps({"origin": self.origin, "ref": ref})
        connection.execute(NOTIFY, {"channel": self.channel, "payload": payload.decode()})

    def publish(self, event):
        """Nothing to do once committed: notify_in_transaction() notified inside it."""

    def start(self, wait=2.0):
        """Start the listening thread once; wait a little for its first probe to come
        back."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._listen, name="saathii-pg-relay",
                                               daemon=True)
                self.thread.start()
                self.health.start()
        self.health.up.wait(wait)

    @property
    def connected(self):
        """Whether the listening connection carries this process's probes."""
        return self.health.connected

    def stop(self):
        """Stop listening (within POLL_SECONDS) and probing."""
        self.stopping.set()
        self.health.stop()
        # A probe being sent finishes first (and none opens a connection after); one held
        # by a stalled database is left to the process's exit.
        if not self.probing.acquire(timeout=1):
            return
        try:
            connection, self.probe_connection = self.probe_connection, None
        finally:
            self.probing.release()
        if connection is not None:
            connection.close()

    def _connect(self, name=APPLICATION_NAME):
        # CONNECT_OPTIONS: a connection that stops answering (a stalled network, not a
        # closed one) is given up by TCP within about 30 s.
        return psycopg.connect(conninfo(self.engine.url), autocommit=True,
                               application_name=f"{name}:{os.getpid()}", **CONNECT_OPTIONS)

    def _send_probe(self, token):
        payload = orjson.dumps({"origin": self.origin, "probe": token}).decode()
        with self.probing:
            if self.stopping.is_set():
                return
            try:
                if self.probe_connection is None:
                    self.probe_connection = self._connect(PROBE_APPLICATION_NAME)
                self.probe_connection.execute("SELECT pg_notify(%s, %s)",
                                              (self.channel, payload))
            except psycopg.Error:
                connection, self.probe_connection = self.probe_connection, None
                if connection is not None:
                    connection.close()
                raise

    def _listen(self):
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with self._connect() as connection:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.health.listening()
                    while not self.stopping.is_set():
                        for notification in connection.notifies(timeout=POLL_SECONDS):
                            self._receive(notification.payload)
                            backoff = 0.5  # it carried something: reconnect at once next time
                        self.health.check()
            except Exception as err:  # noqa: BLE001 - a lost connection, a stall, or a bug:
                # the relay is down (said once), never a listener that died unnoticed
                if not isinstance(err, (psycopg.Error, RelayStalled)):
                    log.exception("PostgreSQL relay listener failed")
                self.health.lost(str(err).strip() or err.__class__.__name__)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self.health.up.clear()

    def _receive(self, raw):
        try:
            payload = orjson.loads(raw)
            if payload["origin"] == self.origin:
                if "probe" in payload:
                    self.health.heard(payload["probe"])
                return  # an event of this process: delivered here when it committed
            if "probe" in payload:
                return
            if "ref" in payload:
                payload = orjson.loads(self._load(payload["ref"]))
            events = [Event.from_json(event) for event in payload["events"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed relay notification")
            return
        except sa.exc.SQLAlchemyError as err:
            log.warning("could not read a relayed batch of events (%s)", err.__class__.__name__)
            return
        for event in events:
            try:
                self.hub.dispatch(event)
            except Exception:  # noqa: BLE001 - one bad event must not end the relay
                log.exception("could not dispatch a relayed event")

    def _load(self, ref):
        with self.engine.connect() as connection:
            found = connection.execute(LOAD, {"id": ref}).scalar()
        if found is None:
            raise KeyError(ref)  # pruned already: too late to deliver
        return found
