"""What a feed client sends, bounded: a flooding socket is closed, never buffered.

simple-websocket's reader thread appends every message it reads to a list that the
socket's handler drains one message at a time, and answers every ping frame itself; a
client that sends faster than the handler answers (each ping may be a commit) would
grow that list without end, and one that floods ping frames costs a pong each. The inbox
takes the list's place and sees the frames first: it lets `rate` messages a second
through (data messages, their fragments and ping frames alike), in bursts of up to
`burst`, and holds at most `burst` unanswered; past either the socket is closed (1008)
and the rest is dropped, unanswered. Cost: a lock and a little arithmetic per frame.

simple-websocket has no public hook for either, so this module swaps two of its
attributes (`input_buffer`, and `ws`, its wsproto connection); tests/test_inbox.py fails
if an upgrade renames them.
"""
import threading
import time

from wsproto.events import Message, Ping


class Inbox(list):
    """A socket's inbound messages (simple-websocket's input_buffer), bounded in count
    and in rate; on_flood(reason) is called once when a client exceeds either."""

    def __init__(self, rate, burst, on_flood):
        super().__init__()
        self.rate = rate
        self.burst = burst
        self.on_flood = on_flood
        self.tokens = float(burst)
        self.refilled = time.monotonic()
        self.flooded = False
        self.lock = threading.Lock()

    def append(self, message):
        """Called by the reader thread for each message: keep it, or refuse the flood."""
        if self._spend(keep=message):
            return
        self.on_flood("Too many messages")

    def count_hit(self):
        """Count one control frame (a ping) against the budget; whether it is within it."""
        if self._spend():
            return True
        self.on_flood("Too many messages")
        return False

    def _spend(self, keep=None):
        with self.lock:
            if self.flooded:
                return True  # said once already: the rest is dropped quietly
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens < 1 or (keep is not None and len(self) >= self.burst):
                self.flooded = True
                return False
            self.tokens -= 1
            if keep is not None:
                super().append(keep)
            return True

    def pop(self, index=-1):
        with self.lock:
            return super().pop(index)


class CountedFrames:
    """A socket's wsproto connection as simple-websocket's reader sees it: each ping frame,
    and each fragment of a message but its last (the whole message is counted once it is
    in), is spent from the inbox's budget first, and past it dropped (never answered)."""

    def __init__(self, connection, inbox):
        self.connection = connection
        self.inbox = inbox

    def events(self):
        for event in self.connection.events():
            counted = isinstance(event, Ping) or (
                isinstance(event, Message) and not event.message_finished)
            if counted and (self.inbox.flooded or not self.inbox.count_hit()):
                continue
            yield event

    def __getattr__(self, name):
        return getattr(self.connection, name)


def install(ws, rate, burst, on_flood):
    """Put an Inbox in place of a simple-websocket socket's input buffer, keeping what
    arrived before, and count its ping frames against the same budget."""
    inbox = Inbox(rate, burst, on_flood)
    before = ws.input_buffer
    ws.input_buffer = inbox
    ws.ws = CountedFrames(ws.ws, inbox)
    # Under gevent nothing runs between the swap and this copy; with real threads (the
    # development server) a message the reader appends to the old list meanwhile is lost.
    for message in list(before):
        inbox.append(message)
    return inbox
