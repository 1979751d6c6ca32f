"""Where the rate-limit counters live: Redis, or this process's memory while Redis fails.

The counters are limits' storages: Redis (a limit then holds across processes), or
process-memory:// (limit_counters.py). When a call to Redis fails, this process counts
in its own memory from then on, and looks at Redis again after a wait that doubles from
RETRY_FIRST_SECONDS to RETRY_MOST_SECONDS: a stalled Redis costs one hit its timeout,
then one look per wait, never every hit. Nothing is refused because the store is down.
One warning line when the counting moves to memory, one when it is back in Redis.
"""
import logging
import time

from limits.storage import storage_from_string

from .limit_counters import ProcessCounters

log = logging.getLogger("saathii.rate_limits")
RETRY_FIRST_SECONDS = 1.0
RETRY_MOST_SECONDS = 60.0


class LimitStore:
    """The counters' store in use: the configured one, or memory while it fails."""

    def __init__(self, uri, options=None, monotonic=time.monotonic):
        self.configured = storage_from_string(uri, **(options or {}))
        self.memory = (self.configured if isinstance(self.configured, ProcessCounters)
                       else ProcessCounters())
        self.monotonic = monotonic
        self.failed_until = None  # while set: counting in memory until then, then a look
        self.wait = RETRY_FIRST_SECONDS

    def current(self):
        """The store to count in now (a look at the configured one once a wait is over)."""
        if self.failed_until is None:
            return self.configured
        if self.monotonic() < self.failed_until:
            return self.memory
        self.failed_until = self.monotonic() + self.wait  # others count in memory meanwhile
        try:
            answers = self.configured.check()
        except Exception:  # noqa: BLE001 - a store that fails its check is still down
            answers = False
        if not answers:
            self.wait = min(self.wait * 2, RETRY_MOST_SECONDS)
            self.failed_until = self.monotonic() + self.wait
            return self.memory
        self.failed_until, self.wait = None, RETRY_FIRST_SECONDS
        log.warning("rate-limit store is back; counting there again")
        return self.configured

    def failed(self, store, err):
        """A call to `store` failed: count in memory until the next look."""
        if store is self.memory:
            raise err  # memory does not fail; a bug must not pass for an outage
        if self.failed_until is None:
            log.warning("rate-limit store failed (%s: %s); counting in this process's "
                        "memory meanwhile", err.__class__.__name__, err)
        self.failed_until = self.monotonic() + self.wait
