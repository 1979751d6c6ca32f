"""Redis connections made on a request's behalf, bounded: shared by the rate limiter's
counters (rate_limits.py) and the event relay's publisher (realtime/relay.py)."""
from redis.backoff import NoBackoff
from redis.retry import Retry


def client_options(timeout):
    """redis-py options for a call on a request's behalf: it gives up after `timeout`
    seconds and is not retried (redis-py's default retries with backoff for seconds)."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout,
            "socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}
