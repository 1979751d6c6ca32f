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


def in_ids(column, ids):
    """column IN ids; on PostgreSQL `= ANY(array)`: one parameter, so one statement (and
    one prepared plan) whatever the number of ids."""
    if db.engine.dialect.name == "postgresql":
        return column == sa.any_(sa.literal(list(ids), ARRAY(sa.BigInteger())))
    return column.in_(ids)
