"""Where the rate-limit counters live: Redis, or this process's memory while Redis fails.

The counters are limits' storages: Redis (a limit then holds across processes), or
process-memory:// (limit_counters.py). When a call to Redis fails, this process counts
in its own memory from then on, and tries Redis again after a wait that doubles from
RETRY_FIRST_SECONDS to RETRY_MOST_SECONDS: a stalled Redis costs one hit its timeout,
then one try per wait, never every hit. Redis counts as back once a hit is counted there
(a Redis that answers PING but refuses writes is still down). Nothing is refused because
the store is down; one warning line when counting moves to memory, one when it is back.
"""
import logging
import time

from limits.storage import storage_from_string

from .limit_counters import ProcessCounters

log = logging.getLogger("saathii.rate_limits")  # the rate limits' log, as operators grep it
RETRY_FIRST_SECONDS = 1.0
RETRY_MOST_SECONDS = 60.0


class LimitStore:
    """The counters' store in use: the configured one, or memory while it fails."""

    def __init__(self, uri, options=None, monotonic=time.monotonic):
        self.configured = storage_from_string(uri, **(options or {}))
        self.memory = (self.configured if isinstance(self.configured, ProcessCounters)
                       else ProcessCounters())
        self.monotonic = monotonic
        self.failed_until = None  # while set: counting in memory until then, then a try
        self.trying = False  # failed before: the next hit in the configured store decides
        self.wait = RETRY_FIRST_SECONDS

    def current(self):
        """The store to count in now (the configured one again once a wait is over)."""
        if self.failed_until is None:
            return self.configured
        if self.monotonic() < self.failed_until:
            return self.memory
        self.failed_until, self.trying = None, True
        return self.configured

    def counted(self, store):
        """A hit was counted in `store`: if it was the configured one on trial, it is back."""
        if self.trying and store is self.configured:
            self.trying, self.wait = False, RETRY_FIRST_SECONDS
            log.warning("rate-limit store is back; counting there again")

    def failed(self, store, err):
        """A call to `store` failed with err: count in memory until the next try. Raise
        err itself when it is not the store's failure (a bug must not pass for an
        outage)."""
        if store is self.memory or not isinstance(err, store.base_exceptions):
            raise err
        if self.trying:  # down still: wait longer before the next try
            self.wait = min(self.wait * 2, RETRY_MOST_SECONDS)
            self.trying = False
        elif self.failed_until is None:
            log.warning("rate-limit store failed (%s: %s); counting in this process's "
                        "memory meanwhile", err.__class__.__name__, err)
        self.failed_until = self.monotonic() + self.wait
