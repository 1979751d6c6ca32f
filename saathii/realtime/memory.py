"""A worker's memory with many feed sockets: collection pauses kept rare, and freed memory
given back once many sockets closed.

Each socket keeps a few hundred objects alive for hours; CPython's full collection walks
them all, and it runs whenever enough young objects have survived, however few become
garbage: at 10,000 sockets a worker it stopped the worker for 0.4 to 2.8 s about once a
minute (BENCHMARKS.md). So each periodic round (the guard's, every few seconds) moves
the survivors to the permanent generation (gc.freeze: the young collections go on, full
ones walk only what came since), and every GC_FULL_COLLECT_SECONDS, or after a large
drop of sockets (half of the peak and at least MIN_DROP), one full collection takes back
the cycles among them, then glibc returns its free pages (malloc_trim). Cost: one full
pause per interval instead of one a minute; cyclic garbage of long-lived objects waits
for it.
"""
import ctypes
import ctypes.util
import gc
import logging
import time

MIN_DROP = 1000

log = logging.getLogger(__name__)


def _glibc_trim():
    """glibc's malloc_trim, or None (another C library)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


class MemoryRelease:
    """Freezes the survivors each round; collects fully now and then, and after a large
    drop of sockets (then also trims)."""

    def __init__(self, trim=None, full_every=600, collector=gc, monotonic=time.monotonic):
        self.trim = trim if trim is not None else _glibc_trim()
        self.full_every = full_every  # seconds (0: never frozen, CPython's own collections)
        self.gc = collector
        self.monotonic = monotonic
        self.peak = 0
        self.next_full = monotonic() + full_every

    def after(self, sockets):
        """Called each round with the sockets held now; return whether it trimmed."""
        self.peak = max(self.peak, sockets)
        if self.peak - sockets >= max(MIN_DROP, self.peak // 2):
            self._collect()
            if self.trim is not None:
                self.trim(0)
            log.info("feed sockets fell from %d to %d: freed memory returned", self.peak,
                     sockets)
            self.peak = sockets
            return True
        if self.full_every <= 0:
            return False
        if self.monotonic() >= self.next_full:
            self._collect()
        else:
            self.gc.freeze()
        return False

    def _collect(self):
        """One full collection over everything, the frozen too; then freeze again."""
        self.next_full = self.monotonic() + self.full_every
        if self.full_every > 0:
            self.gc.unfreeze()
        self.gc.collect()
        if self.full_every > 0:
            self.gc.freeze()
