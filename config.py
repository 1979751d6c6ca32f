"""Configuration: one class, read from environment variables with safe defaults."""
import os
import resource
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
DEV_JWT_SECRET = "saathii-development-secret-not-for-production-use"
# A request body and a feed socket message alike: at most this many bytes.
MAX_BODY_BYTES = 16 * 1024


def _bool(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _float(name, default):
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def database_url(value):
    """Return a SQLAlchemy URL for DATABASE_URL, rewriting Heroku-style postgres:// URLs."""
    if not value:
        return f"sqlite:///{BASE_DIR / 'instance' / 'saathii.db'}"
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix):]
    return value


RELAYS = ("redis", "postgresql", "none")


def event_relay(database_url, redis_url, requested=None):
    """Which relay carries feed events between processes: Redis when REDIS_URL is set,
    else PostgreSQL's LISTEN/NOTIFY on a PostgreSQL database, else none (one process)."""
    if requested and requested != "auto":
        if requested not in RELAYS:
            raise ValueError(f"EVENT_RELAY must be auto or one of {', '.join(RELAYS)}")
        if requested == "redis" and not redis_url:
            raise ValueError("EVENT_RELAY=redis needs REDIS_URL")
        if requested == "postgresql" and not database_url.startswith("postgresql"):
            raise ValueError("EVENT_RELAY=postgresql needs a PostgreSQL DATABASE_URL")
        return requested
    if redis_url:
        return "redis"
    return "postgresql" if database_url.startswith("postgresql") else "none"


# Open files a process needs besides its connections: the listening socket, epoll, logs,
# the metrics files, its database pool and overflow, Redis clients, the relay's connection.
FILES_RESERVED = 256
MIN_CONNECTIONS = 16


def open_files_limit():
    """This process's soft limit on open files (RLIMIT_NOFILE); None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def worker_connections(requested=None, files=None):
    """The connections a gevent worker may hold at once (gunicorn's worker_connections):
    `requested` when set, else as many as the open-files limit leaves once the process's
    own files are kept; never more than that, or accept() would fail with EMFILE."""
    most = max(MIN_CONNECTIONS, files - FILES_RESERVED) if files is not None else None
    if not requested:
        return most if most is not None else 10000
    return min(requested, most) if most is not None else requested


def reserved_connections(connections, requested=None):
    """A worker's connection slots kept from feed sockets, for REST, health checks and
    metrics: `requested` when set, else a quarter (REST clients keep theirs alive)."""
    if requested is not None:
        return min(requested, connections)
    return max(MIN_CONNECTIONS // 2, connections // 4)


def default_env(url):
    """Production unless running on the embedded SQLite database."""
    return "development" if url.startswith("sqlite") else "production"


class Config:
    SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("DATABASE_URL"))
    SAATHII_ENV = os.environ.get("SAATHII_ENV") or default_env(SQLALCHEMY_DATABASE_URI)
    JWT_SECRET = os.environ.get("JWT_SECRET") or (
        DEV_JWT_SECRET if SAATHII_ENV != "production" else None
    )
    # Each gevent worker serves many requests at once: give it enough connections.
    # (PostgreSQL connections are checked on checkout by saathii.database, not pre-pinged.)
    SQLALCHEMY_ENGINE_OPTIONS = {
        "pool_pre_ping": False,
        "pool_size": _int("DB_POOL_SIZE", 20),
        "max_overflow": _int("DB_MAX_OVERFLOW", 10),
        "pool_timeout": _int("DB_POOL_TIMEOUT_SECONDS", 10),  # REQUEST_TIMEOUT_SECONDS first
    }
    SQLITE_BUSY_TIMEOUT_MS = _int("SQLITE_BUSY_TIMEOUT_MS", 5000)
    # PostgreSQL ends a statement that runs longer than this (0: no limit; migrations run
    # without it); no longer than a request's time, so the server stops when it gives up.
    DB_STATEMENT_TIMEOUT_SECONDS = _float("DB_STATEMENT_TIMEOUT_SECONDS", 5)
    # Once its body is in, a request may take this long; past it (a stalled database,
    # say) it is answered 503 with Retry-After. Enforced under gunicorn's gevent workers.
    REQUEST_TIMEOUT_SECONDS = _float("REQUEST_TIMEOUT_SECONDS", 5)
    # A batch of state changes waits this long at most for a row lock another transaction
    # holds (PostgreSQL); past it the blocked change is written alone and the rest go on.
    BATCH_LOCK_WAIT_MS = _int("BATCH_LOCK_WAIT_MS", 100)
    MAX_CONTENT_LENGTH = MAX_BODY_BYTES
    # A request body must arrive whole within this time (else 408): no slow client holds
    # a worker's attention, and none holds a database connection (bodies are read first).
    REQUEST_BODY_TIMEOUT_SECONDS = _float("REQUEST_BODY_TIMEOUT_SECONDS", 10)
    # An answer must be taken whole by its client within this time, or the connection is
    # closed (under gunicorn; 0: no limit): no slow reader holds a connection.
    RESPONSE_SEND_TIMEOUT_SECONDS = _float("RESPONSE_SEND_TIMEOUT_SECONDS", 30)
    PORT = _int("PORT", 5000)
    # Trust one proxy's X-Forwarded-For/-Proto/-Host (the client's address, and HTTPS).
    PROXY_FIX = _bool("PROXY_FIX", False)
    # Where clients reach the service (https://api.example.com): Link headers are absolute
    # from it; unset, they are paths. Never built from the Host header a client sends.
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "")
    # Strict-Transport-Security's max-age on answers served over HTTPS (0: not sent).
    HSTS_SECONDS = _int("HSTS_SECONDS", 31_536_000)
    # Host names the service answers (comma-separated; ".example.com" takes subdomains):
    # any other Host header gets 400. Unset: any well-formed one.
    TRUSTED_HOSTS = [host.strip() for host in os.environ.get("TRUSTED_HOSTS", "").split(",")
                     if host.strip()] or None
    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    # text (readable lines) or json (one object per line), for the app's and gunicorn's logs.
    LOG_FORMAT = os.environ.get("LOG_FORMAT") or "text"
    # GET /metrics for Prometheus; with a token set, it needs `Authorization: Bearer <token>`.
    METRICS_ENABLED = _bool("METRICS_ENABLED", True)
    METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or None
    # Real-time feed: events between processes through Redis when REDIS_URL is set, else
    # through PostgreSQL's LISTEN/NOTIFY; on SQLite alone they stay in one process.
    REDIS_URL = os.environ.get("REDIS_URL") or None
    REDIS_CHANNEL = os.environ.get("REDIS_CHANNEL", "saathii:events")
    # Each Redis call made on a request's behalf (rate limits, publishing) gives up after
    # this long, and is not retried.
    REDIS_TIMEOUT_SECONDS = _float("REDIS_TIMEOUT_SECONDS", 0.5)
    # Redis connections a process keeps for its rate-limit counters; past them a call
    # waits its turn (within REDIS_TIMEOUT_SECONDS) rather than fail.
    REDIS_MAX_CONNECTIONS = _int("REDIS_MAX_CONNECTIONS", 50)
    NOTIFY_CHANNEL = os.environ.get("NOTIFY_CHANNEL", "saathii_events")
    # Each process sends itself a probe through its relay this often; one not back within
    # RELAY_STALL_SECONDS marks the relay down (readiness, saathii_relay_up) until one is.
    RELAY_PROBE_SECONDS = _float("RELAY_PROBE_SECONDS", 2)
    RELAY_STALL_SECONDS = _float("RELAY_STALL_SECONDS", 6)
    # auto, redis, postgresql or none: resolved by event_relay() when the app is made.
    EVENT_RELAY = os.environ.get("EVENT_RELAY") or "auto"
    if os.environ.get("RATELIMIT_STORAGE_URI"):
        RATELIMIT_STORAGE_URI = os.environ["RATELIMIT_STORAGE_URI"]
    # Clock skew forgiven on a token's iat and nbf (never on exp).
    JWT_LEEWAY_SECONDS = _int("JWT_LEEWAY_SECONDS", 30)
    # Connections each gunicorn worker holds (feed sockets and REST alike); by default as
    # many as the open-files limit allows. Feed sockets take all but the reserved ones:
    # past that a socket open is answered 503, and REST and health checks still get in.
    WORKER_CONNECTIONS = worker_connections(_int("WORKER_CONNECTIONS", 0), open_files_limit())
    FEED_RESERVED_CONNECTIONS = reserved_connections(
        WORKER_CONNECTIONS, _int("FEED_RESERVED_CONNECTIONS", None))
    # Requests of a worker at work at once, how many more may wait for one, and how
    # long each may wait: past either, 503 with Retry-After at once (0 active: off).
    ADMISSION_MAX_ACTIVE = _int("ADMISSION_MAX_ACTIVE", 32)
    ADMISSION_MAX_WAITING = _int("ADMISSION_MAX_WAITING", 64)
    ADMISSION_MAX_WAIT_SECONDS = _float("ADMISSION_MAX_WAIT_SECONDS", 0.25)
    # A refused connection's next request is read after half this to this long.
    ADMISSION_REFUSED_PAUSE_SECONDS = _float("ADMISSION_REFUSED_PAUSE_SECONDS", 1.0)
    # On a restart each worker closes its sockets (1012) telling each client when to come
    # back: spread over sockets / this rate seconds, so the service is not asked all at once.
    FEED_RECONNECT_RATE = _int("FEED_RECONNECT_RATE", 1500)
    # How long a restarted web process takes to answer again: on a stop (not a reload,
    # where the new workers accept already) the reconnect delays start after it.
    FEED_RESTART_SECONDS = _float("FEED_RESTART_SECONDS", 3)
    FEED_PING_INTERVAL_SECONDS = _int("FEED_PING_INTERVAL_SECONDS", 25)
    FEED_MAX_MESSAGE_BYTES = MAX_BODY_BYTES
    FEED_EVENT_RETENTION_HOURS = _int("FEED_EVENT_RETENTION_HOURS", 24)
    # A send the client does not drain within this many seconds closes its socket.
    FEED_SEND_TIMEOUT_SECONDS = _int("FEED_SEND_TIMEOUT_SECONDS", 10)
    # Messages other than presence a socket may have queued; past that it is too slow.
    FEED_MAX_QUEUED = _int("FEED_MAX_QUEUED", 1000)
    # Sockets one user may hold in a worker; a new one closes the oldest past this.
    FEED_MAX_SOCKETS_PER_USER = _int("FEED_MAX_SOCKETS_PER_USER", 10)
    # Messages a client may send a second, and in one burst (also the most it may have
    # unanswered); past either its socket is closed (1008).
    FEED_MESSAGES_PER_SECOND = _int("FEED_MESSAGES_PER_SECOND", 5)
    FEED_MESSAGE_BURST = _int("FEED_MESSAGE_BURST", 20)
    # How often open sockets' accounts are checked; deactivated ones are closed. The same
    # round freezes the objects that survived (no full collection walks them again) and,
    # every GC_FULL_COLLECT_SECONDS, collects fully once (0: CPython's own collections,
    # a pause of seconds about once a minute at 10,000 sockets a worker).
    FEED_ACCOUNT_CHECK_SECONDS = _float("FEED_ACCOUNT_CHECK_SECONDS", 30)
    GC_FULL_COLLECT_SECONDS = _float("GC_FULL_COLLECT_SECONDS", 600)
    # Per-user rate limits (the limits library's syntax); stored in Redis when REDIS_URL is set.
    RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
    RATELIMIT_HEARTBEAT = os.environ.get("RATELIMIT_HEARTBEAT", "12 per minute")
    RATELIMIT_FAVORITE_CHANGES = os.environ.get("RATELIMIT_FAVORITE_CHANGES", "60 per minute")
    RATELIMIT_PRESENCE_LOOKUPS = os.environ.get("RATELIMIT_PRESENCE_LOOKUPS", "120 per minute")
    RATELIMIT_FEED_CONNECTS = os.environ.get("RATELIMIT_FEED_CONNECTS", "30 per minute")
    # Keeps this deployment's counters apart from others sharing the Redis.
    RATELIMIT_KEY_PREFIX = os.environ.get("RATELIMIT_KEY_PREFIX", "saathii")
    # How long a favorites list's online/available counts may be reused (0: never).
    FAVORITE_COUNTS_CACHE_SECONDS = _int("FAVORITE_COUNTS_CACHE_SECONDS", 2)
    # A 304 to If-None-Match is answered from memory (no database) for at most this long
    # after the answer was read (0: every conditional GET reads; see revalidation.py).
    CONDITIONAL_GET_MAX_AGE_SECONDS = _float("CONDITIONAL_GET_MAX_AGE_SECONDS", 30)
    # Presence lifecycle: the sweeper job and its timings.
    SCHEDULER_ENABLED = _bool("SCHEDULER_ENABLED", True)
    SWEEP_INTERVAL_SECONDS = _int("SWEEP_INTERVAL_SECONDS", 15)
    PRESENCE_TIMEOUT_SECONDS = _int("PRESENCE_TIMEOUT_SECONDS", 120)
    BUSY_GRACE_SECONDS = _int("BUSY_GRACE_SECONDS", 300)
    # Presence that follows the feed socket: a user holding one stays online without REST
    # heartbeats, and goes offline OFFLINE_GRACE_SECONDS after their last one closes
    # (unless it reopens meanwhile, on any process). Users without sockets: heartbeats.
    PRESENCE_FROM_SOCKETS = _bool("PRESENCE_FROM_SOCKETS", True)
    OFFLINE_GRACE_SECONDS = _float("OFFLINE_GRACE_SECONDS", 10)
    # How often each process marks its socket holders seen (well within the timeout).
    SOCKET_PRESENCE_REFRESH_SECONDS = _float(
        "SOCKET_PRESENCE_REFRESH_SECONDS", PRESENCE_TIMEOUT_SECONDS / 4)
    # A process's lease on its socket holders: renewed every third of it; once it runs out
    # (the process died) the sweeper takes offline those of its users seen nowhere since.
    SOCKET_LEASE_SECONDS = _float("SOCKET_LEASE_SECONDS", 10)
    # How often socket presence looks at departures and arrivals (0: only when told).
    SOCKET_PRESENCE_TICK_SECONDS = _float("SOCKET_PRESENCE_TICK_SECONDS", 1)
    MIGRATIONS_DIR = BASE_DIR / "migrations"
    # The live console at /console: on by default except in production.
    CONSOLE_ENABLED = _bool("CONSOLE_ENABLED", SAATHII_ENV != "production")
    # The console lists the demo users to sign in as: by default only in the embedded
    # demo (SQLite, not production); never in production.
    CONSOLE_DEMO_USERS = _bool("CONSOLE_DEMO_USERS", SQLALCHEMY_DATABASE_URI.startswith(
        "sqlite") and SAATHII_ENV != "production")
    # Where `flask demo` keeps the demo users' tokens for that list.
    DEMO_TOKENS_FILE = Path(
        os.environ.get("DEMO_TOKENS_FILE") or BASE_DIR / "instance" / "demo-tokens.json")
