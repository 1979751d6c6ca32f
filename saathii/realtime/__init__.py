"""The real-time feed: sockets held by this process, and events relayed between processes."""
from flask import current_app

from ..events import bus
from .hub import Hub
from .relay import RedisRelay

KEY = "saathii_realtime"


class Realtime:
    """The process's hub, and its Redis relay when REDIS_URL is set."""

    def __init__(self, redis_url=None, channel=None):
        self.hub = Hub()
        self.relay = RedisRelay(redis_url, self.hub, channel) if redis_url else None

    def publish(self, event):
        """Deliver an event here at once, and to the other processes through Redis."""
        self.hub.dispatch(event)
        if self.relay is not None:
            self.relay.publish(event)

    def listen(self):
        """Make sure this process hears other processes' events (once it holds sockets)."""
        if self.relay is not None:
            self.relay.start()


def init_app(app):
    """Give the app a hub fed by its event bus."""
    realtime = Realtime(app.config.get("REDIS_URL"), app.config["REDIS_CHANNEL"])
    app.extensions[KEY] = realtime
    with app.app_context():
        bus().subscribe(realtime.publish)


def realtime():
    """The current app's Realtime."""
    return current_app.extensions[KEY]
