"""Per-user rate limits (Flask-Limiter): heartbeats, favorite changes, presence look-ups
and feed socket opens."""
import logging
import math
import time
from functools import lru_cache, wraps

import redis
from flask import current_app, g
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits import parse_many

from . import limiter_hook, metrics
from .auth import bearer_token, current_user, user_id_for_token
from .domain.users import active_caller
from .errors import too_many_requests, unauthorized
from .extensions import limiter
from .limit_counters import ProcessCounters  # noqa: F401 - registers process-memory://
from .redis_options import client_options

log = logging.getLogger(__name__)
STORE_FAILURE_LOG_SECONDS = 10


def caller_key():
    """Limit by the user a token names; an invalid token is limited by address (and 401s)."""
    # authenticate has verified the token already on every limited route.
    user_id = g.get("user_id") or user_id_for_token(bearer_token())
    return f"user:{user_id}" if user_id is not None else f"ip:{get_remote_address()}"


def _limit(setting, scope):
    shared = limiter.shared_limit(lambda: current_app.config[setting], scope=scope,
                                  key_func=caller_key)

    def decorate(view):
        limited = shared(view)

        @wraps(view)
        def counted(*args, **kwargs):
            try:
                return limited(*args, **kwargs)
            except RateLimitExceeded:
                current_user()  # a caller whose account is gone hears 401, not 429
                metrics.rate_limited(scope)
                raise

        return counted

    return decorate


def count_hit(setting, scope, user_id):
    """Count one hit of a user against a view's shared limit from outside a view (a feed
    ping spends the heartbeat budget); return whether it was within the limit. The key is
    the one Flask-Limiter gives the views' hits, so both count against one budget."""
    config = current_app.config
    if not config["RATELIMIT_ENABLED"]:
        return True
    key = _key(scope, user_id)
    try:
        # As Flask-Limiter counts a view's hit: each limit of the setting, shortest window
        # first ("2/minute;5/hour"), up to the first one refused, so that refused
        # attempts do not use up the longer windows.
        for item in _limits_of(config[setting]):
            if not limiter.limiter.hit(item, *key):
                return False
        return True
    except Exception as err:  # noqa: BLE001 - as in views: a failing store lets it through
        _store_failed(err)
        return True


def require_within_limit(setting, scope, user_id):
    """Spend one hit from outside a view (a feed socket's upgrade); past the limit,
    raise 429 with Retry-After, or 401 if the user's account is gone (as in views)."""
    if count_hit(setting, scope, user_id):
        return
    if active_caller(user_id) is None:
        raise unauthorized()
    metrics.rate_limited(scope)
    raise too_many_requests(_seconds_to_reset(setting, scope, user_id))


_last_store_failure = [0.0]


def _store_failed(err):
    """Say that the counters' store failed: one line (no traceback: it is the store's
    outage, not a bug here), at most every STORE_FAILURE_LOG_SECONDS during an outage."""
    now = time.monotonic()
    if now - _last_store_failure[0] >= STORE_FAILURE_LOG_SECONDS:
        _last_store_failure[0] = now
        log.warning("rate-limit store failed (%s: %s); hits let through meanwhile",
                    err.__class__.__name__, err)


@lru_cache(maxsize=64)
def _limits_of(setting_value):
    """The limits a setting's value names, shortest window first (parsed once: feed pings
    and opens spend on every message and upgrade)."""
    return tuple(sorted(parse_many(setting_value)))


def _key(scope, user_id):
    prefix = current_app.config["RATELIMIT_KEY_PREFIX"]
    return [part for part in (prefix, f"user:{user_id}", scope) if part]


def _seconds_to_reset(setting, scope, user_id):
    """Whole seconds until every exhausted window of the setting's limits opens again."""
    key, now = _key(scope, user_id), time.time()
    try:
        windows = [limiter.limiter.get_window_stats(item, *key)
                   for item in _limits_of(current_app.config[setting])]
    except Exception:  # noqa: BLE001 - the store failed since the hit: a guess will do
        return 60
    resets = [window.reset_time for window in windows if window.remaining == 0]
    return max(1, math.ceil(max(resets, default=now) - now))


heartbeat_limit = _limit("RATELIMIT_HEARTBEAT", "heartbeat")
favorite_changes_limit = _limit("RATELIMIT_FAVORITE_CHANGES", "favorite-changes")
presence_lookups_limit = _limit("RATELIMIT_PRESENCE_LOOKUPS", "presence-lookups")


def init_app(app):
    """Bind the limiter; its storage is Redis when REDIS_URL is set, memory otherwise."""
    config = app.config
    for setting in ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META"):
        if config.get(setting):  # they would never be counted: see below
            raise RuntimeError(f"{setting} is not supported: limits here are set per view "
                               "(saathii/rate_limits.py)")
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "process-memory://")
    uri = config["RATELIMIT_STORAGE_URI"]
    if uri.startswith("redis"):
        # Every request waits on this store: bounded and never retried, so a stalled
        # Redis costs a request REDIS_TIMEOUT_SECONDS once, then the limiter counts in
        # memory (the fallback below) and looks at Redis again with a growing backoff.
        timeout = config["REDIS_TIMEOUT_SECONDS"]
        options = client_options(timeout)
        if uri.startswith(("redis://", "rediss://")):  # not sentinel, cluster or a socket
            # A pool that makes callers wait their turn (each within the same timeout)
            # past REDIS_MAX_CONNECTIONS, rather than fail with MaxConnectionsError: a
            # surge of socket opens or pings counts in Redis without a connection each.
            options = {"connection_pool": redis.BlockingConnectionPool.from_url(
                uri, max_connections=config["REDIS_MAX_CONNECTIONS"], timeout=timeout,
                **options)}
        config.setdefault("RATELIMIT_STORAGE_OPTIONS", options)
    config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # If Redis fails, count in memory for a while rather than fail requests.
    config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter.init_app(app)
    limiter_hook.remove(app, limiter)  # every limit here is counted by its view's decorator
