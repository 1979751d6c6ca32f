"""An in-process store of fixed-window rate-limit counters (a storage of limits')."""
import threading
import time

from limits.storage import Storage

# How often, at most, the whole table is walked to drop expired counters.
SWEEP_SECONDS = 60.0


class ProcessCounters(Storage):
    """Fixed-window counters in this process's memory (`process-memory://`).

    limits' own `memory://` store re-arms a 10 ms timer on each hit that walks every
    counter: with a counter per user, that walk cost a busy worker a large share of its
    CPU. Here an expired counter restarts when next hit, and the table is swept of
    expired counters at most once a minute. Only the fixed-window strategy (the
    limiter's default) is supported."""

    STORAGE_SCHEME = ["process-memory"]

    def __init__(self, uri=None, wrap_exceptions=False, **options):
        self.counters = {}  # key -> [count, expires at (time.time())]
        self.next_sweep = 0.0
        self.lock = threading.Lock()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self):
        return ValueError

    def _live(self, key, now):
        counter = self.counters.get(key)
        return counter if counter is not None and counter[1] > now else None

    def incr(self, key, expiry, amount=1):
        """Count `amount` hits in the key's window, opening a window of `expiry` seconds."""
        now = time.time()
        with self.lock:
            if now >= self.next_sweep:
                self.next_sweep = now + SWEEP_SECONDS
                self.counters = {k: c for k, c in self.counters.items() if c[1] > now}
            counter = self._live(key, now)
            if counter is None:
                counter = self.counters[key] = [0, now + expiry]
            counter[0] += amount
            return counter[0]

    def get(self, key):
        """The hits counted in the key's current window."""
        counter = self._live(key, time.time())
        return counter[0] if counter else 0

    def get_expiry(self, key):
        """When the key's current window ends (now if it has none)."""
        now = time.time()
        counter = self._live(key, now)
        return counter[1] if counter else now

    def check(self):
        """Always healthy: it is this process's memory."""
        return True

    def reset(self):
        """Drop every counter; return how many there were."""
        with self.lock:
            count, self.counters = len(self.counters), {}
        return count

    def clear(self, key):
        """Drop one key's counter."""
        with self.lock:
            self.counters.pop(key, None)
