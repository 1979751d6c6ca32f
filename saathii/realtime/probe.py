"""A relay's health as heard through the relay itself: each process sends itself a probe
every RELAY_PROBE_SECONDS and counts its relay up only while the probes come back.

A refused or reset connection shows at once; a stalled one (a network that holds every
byte, a server that stopped answering) does not: the connection looks open and carries
nothing. A probe not heard back within RELAY_STALL_SECONDS marks the relay down (readiness
and saathii_relay_up say so, the log says it once) and its listener reconnects. Once
probes come back, `recovered` is called (in its own thread) with the time the relay was
last known good, so the process can send its sockets what they missed (see resync).
Cost: one message of a few bytes per process every RELAY_PROBE_SECONDS.
"""
import itertools
import logging
import threading
import time

from .. import metrics
from ..clock import clock

log = logging.getLogger(__name__)


class RelayStalled(Exception):
    """A probe sent through the relay has not come back in time."""


class RelayHealth:
    """Probes a relay: `send(token)` puts a probe through it, the listener reports what it
    hears (heard), when it listens (listening) and when it lost its connection (lost)."""

    def __init__(self, name, send, interval, stall_after, recovered=None,
                 monotonic=time.monotonic):
        self.name = name  # for the log: "Redis", "PostgreSQL"
        self.send = send
        self.interval = interval
        self.stall_after = stall_after
        self.recovered = recovered
        self.monotonic = monotonic
        self.up = threading.Event()
        self.lock = threading.Lock()
        self.tokens = itertools.count(1)
        self.outstanding = {}  # token -> when it was sent (monotonic)
        self.attached = False  # the listener holds a connection: probes are worth sending
        # The relay was known good until then (wall clock, as changes are stamped): at
        # first, when this process started listening.
        self.good_until = clock.now()
        self.down_since = None  # monotonic, while down after having been up (or never up)
        # Moves (before the relay counts as up again) each time events may have been
        # missed: an outage, or a probe lost on the way; what relied on hearing every
        # event since (revalidation's memory) is then void.
        self.epoch = 0
        self.resyncing = False  # a resync runs
        self.pending = None  # the earliest time a resync was asked from meanwhile
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = None

    @property
    def connected(self):
        """Whether the relay carried this process's last probe back in time."""
        return self.up.is_set()

    def start(self):
        """Start sending probes (once)."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._probe_loop, daemon=True,
                                               name=f"saathii-{self.name.lower()}-probe")
                self.thread.start()

    def stop(self):
        self.stopping.set()
        self.wake.set()

    def listening(self):
        """The listener (re)connected: probe at once; it counts as up once one comes back."""
        with self.lock:
            self.outstanding.clear()
            self.attached = True
        self.wake.set()

    def probe(self):
        """A new probe's token, counted as sent now."""
        token = next(self.tokens)
        with self.lock:
            self.outstanding[token] = self.monotonic()
        return token

    def heard(self, token):
        """The listener heard one of this process's probes."""
        with self.lock:
            if self.outstanding.pop(token, None) is None:
                return  # from before a reconnection
            # Probes go out one after another, each once sent: an earlier one still
            # outstanding was lost on the way (a connection reset and silently renewed),
            # and whatever the relay carried then may be lost with it.
            lost = [sent for sent in self.outstanding if sent < token]
            for older in lost:
                del self.outstanding[older]
            if lost:
                self.epoch += 1
            # While down, good_until stays when it was last known good: the resync's start.
            lost_after, self.good_until = self.good_until, clock.now()
            was_up = self.up.is_set()
            self.up.set()
            was_down, self.down_since = self.down_since, None
        if was_up:
            if lost:
                log.warning("%s relay lost a probe; sending sockets what changed since",
                            self.name)
                self.recover(lost_after)
            return
        metrics.relay_up(True)
        if was_down is None:
            return
        log.warning("%s relay carries events again after %.1fs", self.name,
                    self.monotonic() - was_down)
        self.recover(lost_after)

    def recover(self, since):
        """Have the process send its sockets what changed since a time, in a thread: one
        at a time (asked again meanwhile, it runs once more, from the earliest time)."""
        if self.recovered is None:
            return
        with self.lock:
            if self.resyncing:
                self.pending = since if self.pending is None else min(self.pending, since)
                return
            self.resyncing = True
        threading.Thread(target=self._resync, args=(since,), daemon=True,
                         name=f"saathii-{self.name.lower()}-resync").start()

    def _resync(self, since):
        while True:
            try:
                self.recovered(since)
            except Exception:  # noqa: BLE001 - a resync that fails must not end this loop
                log.exception("resync failed")
            with self.lock:
                since, self.pending = self.pending, None
                if since is None:
                    self.resyncing = False
                    return

    def check(self):
        """Raise RelayStalled when a probe has not come back within stall_after seconds
        (the listener calls this between reads)."""
        with self.lock:
            oldest = min(self.outstanding.values(), default=None)
        if oldest is not None and self.monotonic() - oldest > self.stall_after:
            raise RelayStalled(f"no probe came back through the relay in {self.stall_after:g}s")

    def lost(self, reason):
        """The listener lost its connection, or found it stalled; said once per outage."""
        with self.lock:
            self.outstanding.clear()
            self.attached = False
            if self.down_since is not None:
                return
            self.down_since = self.monotonic()
            self.up.clear()
            self.epoch += 1
        metrics.relay_up(False)
        log.warning("%s relay is down (%s); other processes' events reach this process's "
                    "sockets once it is back", self.name, reason)

    def _probe_loop(self):
        while not self.stopping.is_set():
            self.wake.wait(self.interval)
            self.wake.clear()
            if self.stopping.is_set() or not self.attached:
                continue
            try:
                self.send(self.probe())
            except Exception as err:  # noqa: BLE001 - a probe lost is what check() notices
                log.debug("%s relay probe not sent (%s)", self.name, err)
