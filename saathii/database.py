"""Database connections: a pooled PostgreSQL connection is checked without a round trip."""
import select

import orjson
from psycopg.types.json import set_json_loads
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

from .extensions import db

try:  # gevent patches select: its poll would yield to other greenlets mid-checkout
    from gevent.monkey import get_original
    _poll = get_original("select", "poll")
except ImportError:  # pragma: no cover - gevent is a requirement
    _poll = select.poll


def has_news(dbapi_connection):
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
        if dbapi_connection.closed or has_news(dbapi_connection):
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as err:  # noqa: BLE001 - the pool replaces the connection
                raise DisconnectionError("connection lost while idle in the pool") from err


def init_app(app):
    """Install the connection check on the app's PostgreSQL engines, and have psycopg
    read JSON columns (a listener's interests) with orjson."""
    set_json_loads(orjson.loads)
    with app.app_context():
        for engine in db.engines.values():
            if engine.dialect.name == "postgresql":
                check_connections(engine)
