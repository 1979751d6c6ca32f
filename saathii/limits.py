"""Per-user rate limits: heartbeats, favorite changes, presence look-ups.

Fixed windows counted with the `limits` library (Flask-Limiter's engine), in Redis when
configured, so that a limit holds across processes, or in this process's memory. Leaner
than Flask-Limiter, whose generic checks cost more than a heartbeat's own work.
"""
import logging
import time
from functools import wraps

from flask import current_app, g, request
from limits import parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .auth import bearer_token, user_id_for_token
from .errors import HTTP_DETAILS, APIError

log = logging.getLogger(__name__)

KEY = "saathii_limits"
MAX_BACKEND_CHECKS = 5  # while the storage is down, re-check it after 2, 4, ... 32 s


class LazyMemoryStorage(MemoryStorage):
    """limits' memory storage, dropping expired counters every EXPIRY_SECONDS in passing.

    limits' own re-arms a 10 ms timer on every hit that scans every counter: with one
    counter per user that is most of a busy process's CPU. Expired counters read as zero
    either way; the scan only frees their memory."""

    EXPIRY_SECONDS = 10.0

    def __init__(self):
        super().__init__()
        self.next_expiry = time.monotonic() + self.EXPIRY_SECONDS

    def _MemoryStorage__schedule_expiry(self):  # replaces the timer of the base class
        now = time.monotonic()
        if now >= self.next_expiry:
            self.next_expiry = now + self.EXPIRY_SECONDS
            self._MemoryStorage__expire_events()


def caller_key():
    """Limit by the user a token names; an invalid token is limited by address (and 401s)."""
    user_id = g.get("user_id") or user_id_for_token(bearer_token())
    return f"user:{user_id}" if user_id is not None else f"ip:{request.remote_addr}"


class RateLimits:
    """An app's counters: in the configured storage, in memory while that storage fails."""

    def __init__(self, config):
        uri = config["RATELIMIT_STORAGE_URI"]
        in_memory = uri.startswith("memory://")
        self.storage = LazyMemoryStorage() if in_memory else storage_from_string(uri)
        self.limiter = FixedWindowRateLimiter(self.storage)
        self.fallback = None if in_memory else FixedWindowRateLimiter(LazyMemoryStorage())
        self.prefix = config["RATELIMIT_KEY_PREFIX"]
        self.storage_dead = False
        self.checks = 0
        self.last_check = 0.0
        self.parsed = {}

    def items(self, text):
        """The limits a setting names ("12 per minute", or several joined by ;)."""
        items = self.parsed.get(text)
        if items is None:
            items = self.parsed[text] = sorted(parse_many(text))
        return items

    def hit(self, text, key, scope):
        """Count one request; return (limit, reset time, remaining, breached) to report."""
        if self.storage_dead and not self._storage_recovered():
            return self._hit(self.fallback, text, key, scope)
        try:
            return self._hit(self.limiter, text, key, scope)
        except Exception:  # noqa: BLE001 - any storage failure: count in memory meanwhile
            if self.fallback is None:
                raise
            log.warning("Rate limit storage unreachable - falling back to in-memory storage")
            self.storage_dead = True
            self.checks, self.last_check = 0, time.time()
            return self._hit(self.fallback, text, key, scope)

    def _hit(self, limiter, text, key, scope):
        identifiers = (self.prefix, key, scope) if self.prefix else (key, scope)
        report, breached = None, False
        for item in self.items(text):  # every limit counts the request, as Flask-Limiter's
            over = not limiter.hit(item, *identifiers)
            reset, remaining = limiter.get_window_stats(item, *identifiers)
            # Report the limit that refused, else the one closest to refusing.
            if not breached and (over or report is None or remaining < report[2]):
                report = (item, reset, remaining)
            breached = breached or over
        return (*report, breached)

    def _storage_recovered(self):
        if self.checks > MAX_BACKEND_CHECKS:
            self.checks = 0
        if time.time() - self.last_check <= 2 ** self.checks:
            return False
        self.last_check = time.time()
        self.checks += 1
        try:
            healthy = self.storage.check()
        except Exception:  # noqa: BLE001 - still down
            healthy = False
        if healthy:
            log.info("Rate limit storage recovered")
            self.storage_dead = False
        return healthy


def limited(setting, scope):
    """Decorate a view with the limit named by the config setting, shared by scope."""

    def decorate(view):
        @wraps(view)
        def limited_view(*args, **kwargs):
            app = current_app._get_current_object()
            limits = app.extensions.get(KEY)
            if limits is not None:
                item, reset, remaining, breached = limits.hit(
                    app.config[setting], caller_key(), scope)
                g.rate_limit = (item.amount, remaining, int(reset + 1))
                if breached:
                    raise APIError(429, HTTP_DETAILS[429])
            return view(*args, **kwargs)

        return limited_view

    return decorate


heartbeat_limit = limited("RATELIMIT_HEARTBEAT", "heartbeat")
favorite_changes_limit = limited("RATELIMIT_FAVORITE_CHANGES", "favorite-changes")
presence_lookups_limit = limited("RATELIMIT_PRESENCE_LOOKUPS", "presence-lookups")


def add_headers(response):
    """after_request: X-RateLimit-Limit, -Remaining and -Reset, and Retry-After (seconds)
    on every answer of a limited route, as Flask-Limiter writes them."""
    state = g.get("rate_limit")
    if state is None:
        return response
    amount, remaining, reset_at = state
    headers = response.headers
    headers["X-RateLimit-Limit"] = str(amount)
    headers["X-RateLimit-Remaining"] = str(remaining)
    headers["X-RateLimit-Reset"] = str(reset_at)
    now = time.time()
    existing = headers.get("Retry-After")  # a 503 may already ask for a longer wait
    if existing is not None and existing.isdigit():
        reset_at = max(reset_at, int(now + int(existing)))
    headers["Retry-After"] = str(int(reset_at - now))
    return response


def init_app(app):
    """Count in Redis when REDIS_URL (or RATELIMIT_STORAGE_URI) is set, memory otherwise."""
    config = app.config
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "memory://")
    if config["RATELIMIT_ENABLED"]:
        app.extensions[KEY] = RateLimits(config)
        app.after_request(add_headers)
