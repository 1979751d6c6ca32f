"""Conditional GET for the mobile cache: weak ETags, and a 304 that skips the database.

An answer's ETag is a digest of what it says, last_seen and version left out (heartbeats
move them and nothing else), so every process computes the same one for the same answer.
Each process remembers the last ETag per user and conditional query, what it depends on
(users' presence, a user's favorites) and the last event heard before its read. A
matching If-None-Match is answered 304 from that memory while no event heard since
touches it, the relay has carried every event since (up, and no outage or lost probe
since: its epoch), and it is younger than CONDITIONAL_GET_MAX_AGE_SECONDS (what no event
announces: a profile edited, an account deactivated). Otherwise the answer is read, its
ETag compared and remembered. Cost: one dict write per event heard; per 304, a look at
each user the answer depends on; nothing for a request without If-None-Match.
"""
import hashlib
import json
import threading
import time
from dataclasses import dataclass

MAX_ENTRIES = 100_000
VOLATILE = ("last_seen", "version", "updated_at")  # moved by heartbeats alone


def etag_of(data):
    """The weak ETag of an answer's data (unquoted): its digest without the fields
    heartbeats move."""
    digest = hashlib.blake2b(json.dumps(_stable(data), sort_keys=True, default=str,
                                        separators=(",", ":")).encode(), digest_size=12)
    return digest.hexdigest()


def _stable(data):
    if isinstance(data, dict):
        return {key: _stable(value) for key, value in data.items() if key not in VOLATILE}
    if isinstance(data, list):
        return [_stable(value) for value in data]
    return data


@dataclass(frozen=True)
class Mark:
    """The last event heard, and the relay's epoch, before an answer was read."""

    sequence: int
    relay_epoch: int


@dataclass
class Entry:
    etag: str
    sequence: int
    relay_epoch: int
    users: tuple
    favorites_of: int | None
    made: float


class Changes:
    """What this process has heard (every event its hub dispatches, its own and other
    processes'), and the ETags it computed since."""

    def __init__(self, max_age_seconds, relay_epoch=lambda: 0, monotonic=time.monotonic):
        self.max_age = max_age_seconds
        self.relay_epoch = relay_epoch  # moves when the relay may have missed events
        self.monotonic = monotonic
        self.lock = threading.Lock()
        self.sequence = 0
        self.presence = {}   # user id -> the sequence of the last presence event heard
        self.favorites = {}  # user id -> the sequence of their last favorite change heard
        self.entries = {}

    def heard(self, event):
        """An event dispatched here: answers depending on its subject are stale."""
        with self.lock:
            self.sequence += 1
            if event.is_presence:
                self.presence[event.subject_id] = self.sequence
            elif event.type.startswith("favorite_"):
                self.favorites[event.data["user_id"]] = self.sequence

    def mark(self):
        """Taken before an answer is read (an event heard after it makes it stale)."""
        return Mark(self.sequence, self.relay_epoch())

    def remember(self, key, etag, mark, users, favorites_of=None):
        """Remember an answer's ETag, read after `mark`, depending on these users'
        presence (and favorites_of's favorites)."""
        with self.lock:
            if mark.relay_epoch != self.relay_epoch():
                return
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
            self.entries[key] = Entry(etag, mark.sequence, mark.relay_epoch, tuple(users),
                                      favorites_of, self.monotonic())

    def current(self, key):
        """The ETag remembered for key if nothing heard since touches it, else None."""
        entry = self.entries.get(key)
        if entry is None or self.monotonic() - entry.made > self.max_age \
                or entry.relay_epoch != self.relay_epoch():
            return None
        since = entry.sequence
        if entry.favorites_of is not None and self.favorites.get(entry.favorites_of, 0) > since:
            return None
        presence = self.presence
        for user_id in entry.users:
            if presence.get(user_id, 0) > since:
                return None
        return entry.etag
