"""Events between processes through Redis pub/sub: every process publishes, each holds
one subscription and hands what other processes published to its own hub."""
import json
import logging
import threading
import time
import uuid

import redis

from .. import metrics
from ..events import Event

log = logging.getLogger(__name__)

CHANNEL = "saathii:events"
# After a failed publish, skip Redis for this long so requests do not wait on it.
PUBLISH_PAUSE_SECONDS = 5
MAX_BACKOFF_SECONDS = 30


class RedisRelay:
    """Publishes this process's events and delivers other processes' events to the hub."""

    def __init__(self, url, hub, channel=CHANNEL):
        self.hub = hub
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self.publisher = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=1, retry_on_timeout=False)
        self.subscriber = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=10)
        self.paused_until = 0.0
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.thread = None
        self.lock = threading.Lock()

    def publish(self, event):
        """Send an event to the other processes (this one delivered it locally already)."""
        if time.monotonic() < self.paused_until:
            return
        payload = json.dumps({"origin": self.origin, "event": event.to_json()})
        try:
            self.publisher.publish(self.channel, payload)
        except redis.RedisError as err:
            self.paused_until = time.monotonic() + PUBLISH_PAUSE_SECONDS
            log.warning("Redis publish failed (%s); events reach only this process's "
                        "sockets until it is back", err)

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
