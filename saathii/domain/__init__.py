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
    if not session.in_transaction():
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return session.execute(statement, params).all()


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
