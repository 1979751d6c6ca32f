"""Per-user rate limits (Flask-Limiter): heartbeats, favorite changes, presence look-ups."""
from functools import wraps

from flask import current_app, g
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address

from . import metrics
from .auth import bearer_token, current_user, user_id_for_token
from .extensions import limiter
from .limit_counters import ProcessCounters  # noqa: F401 - registers process-memory://


def caller_key():
    """Limit by the user a token names; an invalid token is limited by address (and 401s)."""
    # require_user has verified the token already on every limited route.
    user_id = g.get("user_id") or user_id_for_token(bearer_token())
    return f"user:{user_id}" if user_id is not None else f"ip:{get_remote_address()}"


def _limit(setting, scope):
    shared = limiter.shared_limit(lambda: current_app.config[setting], scope=scope,
                                  key_func=caller_key)

    def decorate(view):
        limited = shared(view)

        @wraps(view)
        def counted(*args, **kwargs):
            g.rate_limited_view = True  # the limiter counts this request (see below)
            try:
                return limited(*args, **kwargs)
            except RateLimitExceeded:
                current_user()  # a caller whose account is gone hears 401, not 429
                metrics.rate_limited(scope)
                raise

        return counted

    return decorate


@limiter.request_filter
def _outside_limited_views():
    """Every limit here is on a view (no default or application-wide limits), so the
    limiter's own before-request pass has nothing to count: skip it, and let it work
    only inside a limited view."""
    return not g.get("rate_limited_view", False)


heartbeat_limit = _limit("RATELIMIT_HEARTBEAT", "heartbeat")
favorite_changes_limit = _limit("RATELIMIT_FAVORITE_CHANGES", "favorite-changes")
presence_lookups_limit = _limit("RATELIMIT_PRESENCE_LOOKUPS", "presence-lookups")


def init_app(app):
    """Bind the limiter; its storage is Redis when REDIS_URL is set, memory otherwise."""
    config = app.config
    for setting in ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META"):
        if config.get(setting):  # they would never be counted: see _outside_limited_views
            raise RuntimeError(f"{setting} is not supported: limits here are set per view "
                               "(saathii/limits.py)")
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "process-memory://")
    config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # If Redis fails, count in memory for a while rather than fail requests.
    config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter.init_app(app)
