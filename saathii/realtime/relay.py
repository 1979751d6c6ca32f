"""Events between processes through Redis pub/sub: every process publishes, each holds
one subscription and hands what other processes published to its own hub. Its health
is heard through itself (probe.RelayHealth): a stalled Redis is noticed, not only a
refused one.

Requests never wait on Redis: publish() only queues (at most MAX_UNSENT events, in
order), and one publisher thread per process sends them, each call bounded by
PUBLISH_TIMEOUT_SECONDS; after a failure it skips Redis for PUBLISH_PAUSE_SECONDS and
drops what is queued meanwhile; once it publishes again it tells every process to send
its sockets what changed since the first event dropped (see resync), as a process whose
own subscription was down does for itself.
"""
import collections
import json
import logging
import threading
import time
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..clock import isoformat, parse_isoformat
from ..events import Event
from ..redis_options import client_options
from .probe import RelayHealth, RelayStalled

log = logging.getLogger(__name__)

PUBLISH_PAUSE_SECONDS = 5
PUBLISH_TIMEOUT_SECONDS = 2
MAX_BACKOFF_SECONDS = 5  # a relay back is a relay used within seconds
MAX_UNSENT = 10_000


class RedisRelay:
    """Publishes this process's events and delivers other processes' events to the hub."""

    def __init__(self, url, hub, channel, timeout=0.5, probe_seconds=2,
                 stall_seconds=6, recovered=None):
        self.hub = hub
        self.channel = channel
        self.origin = uuid.uuid4().hex
        # Off the request path: a blip of a second costs no events.
        self.publisher = redis.Redis.from_url(
            url, **client_options(max(timeout, PUBLISH_TIMEOUT_SECONDS)))
        # No retry: redis-py would reconnect and resubscribe silently, and what was
        # published meanwhile would be lost unseen; a failure reaches _listen instead.
        self.subscriber = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=10,
            retry=Retry(NoBackoff(), 0))
        self.paused_until = 0.0
        self.dropped_since = None  # the oldest event dropped unsent (wall clock)
        self.health = RelayHealth("Redis", self._send_probe, probe_seconds, stall_seconds,
                                  recovered)
        self.unsent = collections.deque()
        self.has_unsent = threading.Condition(threading.Lock())
        self.publishing = None
        self.stopping = threading.Event()
        self.thread = None
        self.lock = threading.Lock()

    def publish(self, event):
        """Queue an event for the other processes (this one delivered it locally
        already); never waits on Redis."""
        with self.has_unsent:
            if time.monotonic() < self.paused_until or len(self.unsent) >= MAX_UNSENT:
                self._dropped(event.timestamp)
                return
            self.unsent.append(event)
            if self.publishing is None:
                self.publishing = threading.Thread(target=self._publish_loop, daemon=True,
                                                   name="saathii-redis-publisher")
                self.publishing.start()
            self.has_unsent.notify()

    def _publish_loop(self):
        while not self.stopping.is_set():
            with self.has_unsent:
                while not self.unsent and not self.stopping.is_set():
                    self.has_unsent.wait(1.0)
                if not self.unsent:
                    continue
                event = self.unsent.popleft()
            try:
                self._send({"event": event.to_json()})
                self._announce_resync()
            except redis.RedisError as err:
                with self.has_unsent:
                    self.paused_until = time.monotonic() + PUBLISH_PAUSE_SECONDS
                    dropped = len(self.unsent)
                    self._dropped(event.timestamp)
                    self.unsent.clear()
                log.warning("Redis publish failed (%s); events reach only this process's "
                            "sockets until it is back (%d queued dropped)", err, dropped + 1)
            except Exception:  # noqa: BLE001 - one bad event must not end the publisher
                log.exception("could not publish an event")

    def _send(self, message):
        self.publisher.publish(self.channel, json.dumps({"origin": self.origin, **message}))

    def _send_probe(self, token):
        self._send({"probe": token})
        self._announce_resync()  # no event may come to carry it

    def _dropped(self, timestamp):
        """An event was not published (called holding has_unsent)."""
        if self.dropped_since is None or timestamp < self.dropped_since:
            self.dropped_since = timestamp

    def _announce_resync(self):
        """After events were dropped unsent: the other processes send their sockets what
        changed since the first of them (this process's sockets had them)."""
        if self.dropped_since is None:  # nearly always: no lock taken on every publish
            return
        with self.has_unsent:
            since, self.dropped_since = self.dropped_since, None
        if since is not None:
            try:
                self._send({"resync_since": isoformat(since)})
            except redis.RedisError:
                with self.has_unsent:
                    self._dropped(since)
                raise

    def start(self, wait=2.0):
        """Start the subscription thread once; wait a little for its first probe to
        come back."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._listen, name="saathii-redis-relay",
                                               daemon=True)
                self.thread.start()
                self.health.start()
        self.health.up.wait(wait)

    @property
    def connected(self):
        """Whether the subscription carries this process's probes."""
        return self.health.connected

    def stop(self):
        self.stopping.set()
        self.health.stop()

    def _listen(self):
        backoff = 0.5
        while not self.stopping.is_set():
            pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self.health.listening()
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._receive(message["data"])
                        backoff = 0.5  # it carried something: reconnect at once next time
                        self.paused_until = 0.0
                    self.health.check()
            except Exception as err:  # noqa: BLE001 - a relay error, a stall, or a bug:
                # the relay is down (said once), never a listener that died unnoticed
                if not isinstance(err, (redis.RedisError, RelayStalled)):
                    log.exception("Redis relay listener failed")
                self.health.lost(err)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            finally:
                try:
                    pubsub.close()
                except redis.RedisError:
                    pass

    def _receive(self, raw):
        try:
            payload = json.loads(raw)
            if payload["origin"] == self.origin:
                if "probe" in payload:
                    self.health.heard(payload["probe"])
                return  # an event of this process: delivered locally when published
            if "probe" in payload:
                return
            if "resync_since" in payload:
                self.health.recover(parse_isoformat(payload["resync_since"]))
                return
            event = Event.from_json(payload["event"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed relay message")
            return
        try:
            self.hub.dispatch(event)
        except Exception:  # noqa: BLE001 - one bad event must not end the relay
            log.exception("could not dispatch a relayed event")
