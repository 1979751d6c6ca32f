"""Per-user rate limits (Flask-Limiter): heartbeats, favorite changes, presence look-ups."""
from flask import current_app, request
from flask_limiter.util import get_remote_address

from .auth import bearer_token, user_id_for_token
from .extensions import limiter
from .limit_counters import ProcessCounters  # noqa: F401 - registers process-memory://


def caller_key():
    """Limit by the user a token names; an invalid token is limited by address (and 401s)."""
    user_id = user_id_for_token(bearer_token())
    return f"user:{user_id}" if user_id is not None else f"ip:{get_remote_address()}"


def _limit(setting, scope):
    shared = limiter.shared_limit(lambda: current_app.config[setting], scope=scope,
                                  key_func=caller_key)

    def decorate(view):
        limited = shared(view)
        limited.rate_limited = True
        return limited

    return decorate


@limiter.request_filter
def _unlimited():
    """Exempt the views no limit applies to: the limiter then skips resolving limits."""
    view = current_app.view_functions.get(request.endpoint)
    return not getattr(view, "rate_limited", False)


heartbeat_limit = _limit("RATELIMIT_HEARTBEAT", "heartbeat")
favorite_changes_limit = _limit("RATELIMIT_FAVORITE_CHANGES", "favorite-changes")
presence_lookups_limit = _limit("RATELIMIT_PRESENCE_LOOKUPS", "presence-lookups")


def init_app(app):
    """Bind the limiter; its storage is Redis when REDIS_URL is set, memory otherwise."""
    config = app.config
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("REDIS_URL") or "process-memory://")
    config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # If Redis fails, count in memory for a while rather than fail requests.
    config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter.init_app(app)
