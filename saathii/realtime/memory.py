"""Gives a worker's freed memory back to the system once many feed sockets have closed.

Each socket's greenlets keep their stacks in memory from the C allocator (greenlet copies
a switched-out stack to the heap); when thousands of sockets close, that memory is free
but glibc keeps most of it in its heap, so a worker that held a surge stays at its peak
size. After a large drop (half of the peak and at least MIN_DROP sockets) the guard's
periodic round collects garbage and asks glibc to return its free pages (malloc_trim).
Cost: one collection and one trim per large drop; nothing where glibc is absent.
"""
import ctypes
import ctypes.util
import gc
import logging

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
    """Tracks the sockets' peak since the last release; releases after a large drop."""

    def __init__(self, trim=None):
        self.trim = trim if trim is not None else _glibc_trim()
        self.peak = 0

    def after(self, sockets):
        """Called now and then with the sockets held now; return whether it released."""
        self.peak = max(self.peak, sockets)
        if self.peak - sockets < max(MIN_DROP, self.peak // 2):
            return False
        gc.collect()
        if self.trim is not None:
            self.trim(0)
        log.info("feed sockets fell from %d to %d: freed memory returned", self.peak, sockets)
        self.peak = sockets
        return True
