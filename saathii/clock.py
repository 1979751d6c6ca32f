"""The service's single source of time; tests move it instead of sleeping."""
from datetime import datetime, timedelta, timezone


class Clock:
    """UTC wall clock that tests can stop and move."""

    def __init__(self):
        self.offset = timedelta(0)
        self.frozen_at = None

    def now(self):
        """Return the current time as an aware UTC datetime."""
        base = self.frozen_at if self.frozen_at is not None else datetime.now(timezone.utc)
        return base + self.offset

    def freeze(self):
        """Stop the clock at the current time; only advance() moves it from now on."""
        self.frozen_at = datetime.now(timezone.utc)
        self.offset = timedelta(0)

    def advance(self, seconds):
        """Move the clock forward by the given number of seconds."""
        self.offset += timedelta(seconds=seconds)

    def reset(self):
        """Return to real, running time."""
        self.offset = timedelta(0)
        self.frozen_at = None


clock = Clock()


def isoformat(value):
    """Write a datetime as ISO 8601 UTC with a Z suffix (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:  # stored naive, in UTC
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_isoformat(text):
    """The inverse of isoformat: an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
