"""Events between processes through Redis pub/sub: every process publishes, each holds
one subscription and hands what other processes published to its own hub.

Requests never wait on Redis: publish() only queues (at most MAX_UNSENT events, in
order), and one publisher thread per process sends them, each call bounded by
PUBLISH_TIMEOUT_SECONDS; after a failure it skips Redis for PUBLISH_PAUSE_SECONDS and
drops what is queued meanwhile (favorite events stay replayable with `since`).
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

from .. import metrics
from ..events import Event

log = logging.getLogger(__name__)

CHANNEL = "saathii:events"
PUBLISH_PAUSE_SECONDS = 5
PUBLISH_TIMEOUT_SECONDS = 2
MAX_BACKOFF_SECONDS = 30
MAX_UNSENT = 10_000


def client_options(timeout):
    """redis-py options for a call on a request's behalf: it gives up after `timeout`
    seconds and is not retried (redis-py's default retries with backoff for seconds)."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}


class RedisRelay:
    """Publishes this process's events and delivers other processes' events to the hub."""

    def __init__(self, url, hub, channel=CHANNEL, timeout=0.5):
        self.hub = hub
        self.channel = channel
        self.origin = uuid.uuid4().hex
        # Off the request path: a blip of a second costs no events.
        self.publisher = redis.Redis.from_url(
            url, **client_options(max(timeout, PUBLISH_TIMEOUT_SECONDS)))
        self.subscriber = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=10)
        self.paused_until = 0.0
        self.unsent = collections.deque()
        self.has_unsent = threading.Condition(threading.Lock())
        self.publishing = None
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.thread = None
        self.lock = threading.Lock()

    def publish(self, event):
        """Queue an event for the other processes (this one delivered it locally
        already); never waits on Redis."""
        with self.has_unsent:
            if time.monotonic() < self.paused_until or len(self.unsent) >= MAX_UNSENT:
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
                payload = json.dumps({"origin": self.origin, "event": event.to_json()})
                self.publisher.publish(self.channel, payload)
            except redis.RedisError as err:
                with self.has_unsent:
                    self.paused_until = time.monotonic() + PUBLISH_PAUSE_SECONDS
                    dropped = len(self.unsent)
                    self.unsent.clear()
                log.warning("Redis publish failed (%s); events reach only this process's "
                            "sockets until it is back (%d queued dropped)", err, dropped + 1)
            except Exception:  # noqa: BLE001 - one bad event must not end the publisher
                log.exception("could not publish an event")

    def start(self, wait=2.0):
        """Start the subscription thread once; wait a little for it to subscribe."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._listen, name="saathii-redis-relay",
                                               daemon=True)
                self.thread.start()
        self.subscribed.wait(wait)

    @property
    def connected(self):
        """Whether the subscription is up."""
        return self.subscribed.is_set()

    def stop(self):
        self.stopping.set()

    def _listen(self):
        backoff = 0.5
        while not self.stopping.is_set():
            pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self.subscribed.set()
                metrics.relay_up(True)
                self.paused_until = 0.0
                if backoff > 0.5:
                    log.info("Redis relay subscribed again")
                backoff = 0.5
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._receive(message["data"])
            except redis.RedisError as err:
                self.subscribed.clear()
                metrics.relay_up(False)
                log.warning("Redis relay lost its subscription (%s); retrying in %.1fs",
                            err, backoff)
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
                return  # delivered locally when it was published
            event = Event.from_json(payload["event"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed relay message")
            return
        self.hub.dispatch(event)
