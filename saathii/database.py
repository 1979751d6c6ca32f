"""Database connections: bounded waits on every one, and a pooled PostgreSQL connection
checked without a round trip."""
import select

import orjson
from psycopg.types.json import set_json_loads
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

from .deadline import DeadlineExceeded
from .extensions import db

# Every PostgreSQL connection (pool, relay listener): a connect that gives up, and TCP
# keepalives and a user timeout, so a peer that vanished is noticed in about 30 s even
# with nothing to send. A database that holds its answers is met by the deadlines
# (saathii.deadline); one that is slow to execute, by statement_timeout.
CONNECT_OPTIONS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 30_000}


def postgresql_connect_args(statement_timeout_seconds):
    """psycopg connect() arguments for the pool's PostgreSQL connections."""
    options = f"-c statement_timeout={int(statement_timeout_seconds * 1000)}"
    return {**CONNECT_OPTIONS, "options": options}

try:  # gevent patches select: its poll would yield to other greenlets mid-checkout
    from gevent.monkey import get_original
    _poll = get_original("select", "poll")
except ImportError:  # pragma: no cover - gevent is a requirement
    _poll = select.poll


def server_spoke_while_idle(dbapi_connection):
    """Whether the server sent anything to an idle connection (a FATAL error before it
    closed, or the close itself): a healthy idle connection has nothing to read."""
    try:
        fd = dbapi_connection.pgconn.socket
    except Exception:  # noqa: BLE001 - psycopg: "the connection is lost"
        return True
    poller = _poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def check_connections(engine):
    """Check each PostgreSQL connection taken from the pool, as pool_pre_ping does, but
    send a ping only when its socket says the server spoke or hung up while it was idle:
    a restarted or terminated server is detected; a healthy connection costs no round trip."""

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, connection_record, connection_proxy):
        if dbapi_connection.closed or server_spoke_while_idle(dbapi_connection):
            try:
                engine.dialect.do_ping(dbapi_connection)
            except DeadlineExceeded:  # out of time: no new connection now (the pool
                raise                 # discards this one)
            except Exception as err:  # noqa: BLE001 - the pool replaces the connection
                raise DisconnectionError("connection lost while idle in the pool") from err


def discard_interrupted(engine):
    """A connection whose statement a deadline interrupted is mid-conversation with the
    server: never hand it out again (SQLAlchemy discards it as if it were lost)."""

    @event.listens_for(engine, "handle_error")
    def _interrupted(context):
        if isinstance(context.original_exception, DeadlineExceeded):
            context.is_disconnect = True
            # This connection only: the others are fine (no reconnect storm).
            context.invalidate_pool_on_disconnect = False


def init_app(app):
    """Install the connection checks on the app's PostgreSQL engines, and have psycopg
    read JSON columns (a listener's interests) with orjson."""
    set_json_loads(orjson.loads)
    with app.app_context():
        for engine in db.engines.values():
            if engine.dialect.name == "postgresql":
                check_connections(engine)
                discard_interrupted(engine)
