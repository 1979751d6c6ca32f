"""Per-user rate limits, counted with the limits library: heartbeats, favorite changes,
presence look-ups and feed socket opens.

A limited view spends one hit of its caller's budget before it runs (after
@authenticate, so the caller is known): within it, the answer says what is left in
X-RateLimit-Limit, -Remaining and -Reset; past it, 429 with Retry-After and nothing is
applied. A setting may name several windows ("2/minute;5/hour"): they are spent
shortest first, up to the first one refused, so refused attempts do not use up the
longer ones. Cost: one call to the store a hit plus one for -Reset (Redis: two round
trips; Flask-Limiter's decorator, used before, made three and spent about 50 us of
Python besides, BENCHMARKS.md). The store, and what happens while Redis fails, is
limit_store.py's.
"""
import math
import time
from dataclasses import dataclass
from functools import lru_cache, wraps

import redis
from flask import current_app, g
from limits import parse_many

from . import metrics
from .auth import current_user
from .domain.users import active_caller
from .errors import too_many_requests, unauthorized
from .limit_store import LimitStore
from .redis_options import client_options

KEY = "saathii_limits"


@dataclass(frozen=True)
class Spent:
    """One hit spent against a setting's limits: the limit the answer describes (the
    one refused, else the one with least left), how many it has left, and whether the
    hit was within every limit."""

    limit: object
    remaining: int
    allowed: bool
    key: str
    store: object  # where it was counted: the headers read the window there


def spend(setting, scope, user_id):
    """Spend one hit of a user's budget for a setting's limits; None when limits are off.
    A store that fails lets the hit through (counted in memory from then on)."""
    config = current_app.config
    if not config["RATELIMIT_ENABLED"]:
        return None
    items, key = _limits_of(config[setting]), _key(scope, user_id)
    limits = current_app.extensions[KEY]
    store = limits.current()
    try:
        spent = _spend(store, items, key)
    except Exception as err:  # noqa: BLE001 - failed() raises what is not the store's
        limits.failed(store, err)
        return _spend(limits.current(), items, key)
    limits.counted(store)
    return spent


def _spend(store, limits, key):
    """As limits' fixed-window strategy counts a hit (incr against the window's expiry),
    keeping the counts it reads for the headers."""
    spent = None
    for item in limits:
        item_key = item.key_for(*key)
        count = store.incr(item_key, item.get_expiry())
        left = max(0, item.amount - count)
        if count > item.amount:
            return Spent(item, 0, False, item_key, store)
        if spent is None or left < spent.remaining:
            spent = Spent(item, left, True, item_key, store)
    return spent


def count_hit(setting, scope, user_id):
    """Count one hit of a user against a view's limits from outside a view (a feed ping
    spends the heartbeat budget); return whether it was within them. The key is the
    views' own, so both count against one budget."""
    spent = spend(setting, scope, user_id)
    return spent is None or spent.allowed


def require_within_limit(setting, scope, user_id):
    """Spend one hit from outside a view (a feed socket's upgrade); past the limit,
    raise 429 with Retry-After, or 401 if the user's account is gone (as in views)."""
    spent = spend(setting, scope, user_id)
    if spent is None or spent.allowed:
        return
    if active_caller(user_id) is None:
        raise unauthorized()
    metrics.rate_limited(scope)
    raise too_many_requests(_seconds_to_reset(setting, scope, user_id, spent.store))


def _limit(setting, scope):
    def decorate(view):
        @wraps(view)
        def limited(*args, **kwargs):
            spent = spend(setting, scope, g.user_id)
            if spent is None:
                return view(*args, **kwargs)
            if not spent.allowed:
                current_user()  # a caller whose account is gone hears 401, not 429
                metrics.rate_limited(scope)
                g.rate_limit_headers = _headers(spent)
                raise too_many_requests(_seconds_to_reset(setting, scope, g.user_id,
                                                          spent.store))
            g.rate_limit_headers = _headers(spent)  # on its answer, whatever it is
            return view(*args, **kwargs)

        return limited

    return decorate


def add_headers(response):
    """Say where the caller stands on every answer of a limited view (its errors too)."""
    headers = g.pop("rate_limit_headers", None)
    if headers is not None:
        response.headers.update(headers)
    return response


def _headers(spent):
    """What a limited answer says of the limit: its size, what is left, when it resets."""
    try:
        reset = spent.store.get_expiry(spent.key)
    except Exception as err:  # noqa: BLE001 - failed() raises what is not the store's
        current_app.extensions[KEY].failed(spent.store, err)
        reset = time.time() + spent.limit.get_expiry()  # the store failed since: a guess
    return {"X-RateLimit-Limit": str(spent.limit.amount),
            "X-RateLimit-Remaining": str(spent.remaining),
            "X-RateLimit-Reset": str(int(reset + 1))}


@lru_cache(maxsize=64)
def _limits_of(setting_value):
    """The limits a setting's value names, shortest window first (parsed once: feed pings
    and opens spend on every message and upgrade)."""
    return tuple(sorted(parse_many(setting_value)))


def _key(scope, user_id):
    prefix = current_app.config["RATELIMIT_KEY_PREFIX"]
    return [part for part in (prefix, f"user:{user_id}", scope) if part]


def _seconds_to_reset(setting, scope, user_id, store):
    """Whole seconds until every exhausted window of the setting's limits opens again,
    read in the store the refused hit was counted in."""
    key, now = _key(scope, user_id), time.time()
    try:
        resets = [store.get_expiry(item.key_for(*key))
                  for item in _limits_of(current_app.config[setting])
                  if store.get(item.key_for(*key)) >= item.amount]
    except Exception as err:  # noqa: BLE001 - failed() raises what is not the store's
        current_app.extensions[KEY].failed(store, err)
        return 60  # the store failed since the hit: a guess will do
    return max(1, math.ceil(max(resets, default=now) - now))


SETTINGS = ("RATELIMIT_HEARTBEAT", "RATELIMIT_FAVORITE_CHANGES", "RATELIMIT_PRESENCE_LOOKUPS",
            "RATELIMIT_FEED_CONNECTS")
heartbeat_limit = _limit("RATELIMIT_HEARTBEAT", "heartbeat")
favorite_changes_limit = _limit("RATELIMIT_FAVORITE_CHANGES", "favorite-changes")
presence_lookups_limit = _limit("RATELIMIT_PRESENCE_LOOKUPS", "presence-lookups")


def init_app(app):
    """Make the app's counters' store: Redis when REDIS_URL (or RATELIMIT_STORAGE_URI)
    is set, this process's memory otherwise."""
    config = app.config
    for setting in ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META"):
        if config.get(setting):  # an operator would expect them counted: say they are not
            raise RuntimeError(f"{setting} is not supported: limits here are set per view "
                               "(saathii/rate_limits.py)")
    for setting in SETTINGS:  # a typo stops the start, not every limited request
        try:
            _limits_of(config[setting])
        except ValueError as err:
            raise RuntimeError(f"{setting}={config[setting]!r} is not a rate limit "
                               '("12 per minute", "2/minute;5/hour")') from err
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "process-memory://")
    uri = config["RATELIMIT_STORAGE_URI"]
    options = {}
    if uri.startswith("redis"):
        # Every limited request waits on this store: bounded and never retried, so a
        # stalled Redis costs a request REDIS_TIMEOUT_SECONDS once, then the counting
        # moves to memory (limit_store.py).
        timeout = config["REDIS_TIMEOUT_SECONDS"]
        options = client_options(timeout)
        if uri.startswith(("redis://", "rediss://")):  # not sentinel, cluster or a socket
            # A pool that makes callers wait their turn (each within the same timeout)
            # past REDIS_MAX_CONNECTIONS, rather than fail with MaxConnectionsError: a
            # surge of socket opens or pings counts in Redis without a connection each.
            options = {"connection_pool": redis.BlockingConnectionPool.from_url(
                uri, max_connections=config["REDIS_MAX_CONNECTIONS"], timeout=timeout,
                **options)}
    app.extensions[KEY] = LimitStore(uri, config.get("RATELIMIT_STORAGE_OPTIONS", options))
    app.after_request(add_headers)
