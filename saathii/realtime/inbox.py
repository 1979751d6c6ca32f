"""What a feed client sends, bounded: a flooding socket is closed, never buffered.

simple-websocket's reader thread appends every message it reads to a list that the
socket's handler drains one message at a time; a client that sends faster than the
handler answers (each ping may be a commit) would grow that list without end. The inbox
takes its place: it lets `rate` messages a second through, in bursts of up to `burst`,
and holds at most `burst` unanswered; past either the socket is closed (1008) and the
rest is dropped. Cost: a lock and a little arithmetic per message.
"""
import threading
import time


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
        with self.lock:
            if self.flooded:
                return
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens < 1 or len(self) >= self.burst:
                self.flooded = True
            else:
                self.tokens -= 1
                super().append(message)
                return
        self.on_flood("Too many messages")

    def pop(self, index=-1):
        with self.lock:
            return super().pop(index)


def install(ws, rate, burst, on_flood):
    """Put an Inbox in place of a simple-websocket socket's input buffer, keeping what
    arrived before."""
    inbox = Inbox(rate, burst, on_flood)
    before = ws.input_buffer
    ws.input_buffer = inbox
    # Under gevent nothing runs between the swap and this copy; with real threads (the
    # development server) a message the reader appends to the old list meanwhile is lost.
    for message in list(before):
        inbox.append(message)
    return inbox
