"""Domain rules, one module per concept."""
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..extensions import db

INSERTS = {"postgresql": pg_insert, "sqlite": sqlite_insert}


def upsert(model):
    """An INSERT for this backend that can say ON CONFLICT DO NOTHING."""
    return INSERTS[db.engine.dialect.name](model)


def read(statement, params):
    """Run a read-only statement; all its rows. In a session that has not begun a
    transaction it runs on an autocommit connection: no BEGIN and ROLLBACK round trips
    (a lone statement sees one snapshot either way, as under READ COMMITTED)."""
    session = db.session()  # this request's Session
    options = None if session.in_transaction() else {"isolation_level": "AUTOCOMMIT"}
    connection = session.connection(execution_options=options)
    if connection.dialect.name == "postgresql":
        # The statement's SQL, compiled once, as the driver's own: rows come as psycopg
        # makes them (timestamps naive UTC, as stored), without SQLAlchemy's per-value
        # result processing, which costs more than the query on a 100-row answer.
        sql, defaults = _sql(statement, connection.dialect)
        return connection.exec_driver_sql(sql, {**defaults, **params}).all()
    return connection.execute(statement, params).all()


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


def prebuilt(build):
    """Decorate a function that builds a statement: build it once per database backend.

    Building a statement costs more than running it (SQLAlchemy coerces every clause),
    so hot paths build theirs once, with bind parameters, and pass values to execute."""
    built = {}

    def statement():
        dialect = db.engine.dialect.name
        found = built.get(dialect)
        if found is None:
            found = built[dialect] = build()
        return found

    return statement
