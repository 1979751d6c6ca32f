"""Running SQL: the one read path (fetch_rows), a writing statement on its own
(write_alone), statements built once per backend (built_once), and the helpers they
share."""
from functools import wraps

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .deadline import DeadlineExceeded
from .extensions import db

INSERTS = {"postgresql": pg_insert, "sqlite": sqlite_insert}


def upsert(model):
    """An INSERT for this backend that can say ON CONFLICT DO NOTHING."""
    return INSERTS[db.engine.dialect.name](model)


def fetch_rows(statement, params):
    """Run a read-only statement; all its rows. Outside a transaction it runs in
    autocommit: no BEGIN and ROLLBACK round trips (a lone statement sees one snapshot
    either way, as under READ COMMITTED)."""
    session = db.session()  # this request's Session
    if session.in_transaction():
        return session.connection().execute(statement, params).all()
    dialect = db.engine.dialect
    if dialect.name == "postgresql":
        return _run_pooled(*_sql(statement, dialect), params)
    autocommit = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return autocommit.execute(statement, params).all()


def write_alone(statement, params):
    """PostgreSQL: run one writing statement on its own (autocommit: it commits when it
    returns); all its rows. No BEGIN, transaction id or COMMIT round trips; a statement
    cut short by a deadline or a lost connection has an unknown outcome: the caller's
    DeadlineExceeded, or a DBAPIError whose connection_invalidated is set, unless the
    error says `statement_sent = False` (no connection was had: nothing was written).
    Values are bound as psycopg takes them (timestamps naive UTC)."""
    sql, defaults = _sql(statement, db.engine.dialect)
    try:
        pooled = _checkout(sql, params)
    except (sa.exc.DBAPIError, DeadlineExceeded) as err:
        err.statement_sent = False
        raise
    return _run_pooled(sql, defaults, params, pooled)


def _checkout(sql, params):
    """A pooled connection (the pool's errors raised as SQLAlchemy's)."""
    try:
        return db.engine.raw_connection()
    except psycopg.Error as err:  # the pool raises the driver's own error
        raise _as_sqlalchemy(err, sql, params, lost=True) from err


def _run_pooled(sql, defaults, params, pooled=None):
    """Run compiled SQL on a pooled connection (taken now unless given) with psycopg
    itself, in autocommit.

    Rows come as psycopg makes them (timestamps naive UTC, as stored): SQLAlchemy's
    execution and per-value result processing cost more than the query on a 100-row
    answer. Errors are raised as SQLAlchemy's, and a lost connection is discarded,
    as SQLAlchemy's own execution would do."""
    if pooled is None:
        pooled = _checkout(sql, params)
    connection = pooled.driver_connection
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, {**defaults, **params})
            return cursor.fetchall()
    except psycopg.Error as err:
        lost = db.engine.dialect.is_disconnect(err, connection, None)
        if lost:
            pooled.invalidate(err)
        raise _as_sqlalchemy(err, sql, params, lost) from err
    except DeadlineExceeded as err:  # mid-query: the connection is of no further use
        pooled.invalidate(err)
        raise
    finally:
        try:
            if not connection.closed:
                connection.autocommit = False
        except psycopg.Error as err:  # the connection broke: the pool replaces it
            pooled.invalidate(err)
        pooled.close()  # back to the pool


def _as_sqlalchemy(err, sql, params, lost):
    """The SQLAlchemy error its own execution would raise (the 503 handler knows it)."""
    return sa.exc.DBAPIError.instance(sql, params, err, psycopg.Error,
                                      connection_invalidated=lost)


_compiled = {}


def _sql(statement, dialect):
    key = (id(statement), dialect.name)
    found = _compiled.get(key)
    if found is None:  # keeps the statement alive, so its id is never reused
        compiled = statement.compile(dialect=dialect)
        # The values of the statement's own literals (a 0 or a 1 it compares with).
        defaults = {name: value for name, value in compiled.params.items()
                    if value is not None}
        found = _compiled[key] = (statement, (compiled.string, defaults))
    return found[1]


def in_ids(column, name):
    """column IN the list bound to `name`; on PostgreSQL `= ANY(array)`: one parameter,
    so one statement (and one prepared plan) whatever the number of ids."""
    if db.engine.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=ARRAY(sa.BigInteger())))
    return column.in_(sa.bindparam(name, expanding=True))


def online_by_id(column):
    """`column IS TRUE`, for statements that find users by id among the online ones: the
    same rows as `column` (it is NOT NULL), but PostgreSQL cannot match it to the partial
    index of online users. On statistics from a time when few were online it chose that
    index and scanned every online row for each id (a beat: 1.85 ms and 213 buffers
    against 0.20 ms and 8 through the primary key at 5,000 online: BENCHMARKS.md,
    "Measured again")."""
    return column.is_(True)


def built_once(build):
    """Decorate a function that builds a statement: build it once per database backend
    (and per arguments, for a function that builds statements of several shapes).

    Building a statement costs more than running it (SQLAlchemy coerces every clause),
    so hot paths build theirs once, with bind parameters, and pass values to execute."""
    built = {}

    @wraps(build)
    def statement(*shape):
        key = (db.engine.dialect.name, *shape)
        found = built.get(key)
        if found is None:
            found = built[key] = build(*shape)
        return found

    return statement
