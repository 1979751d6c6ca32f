"""Domain rules, one module per concept."""
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..extensions import db

INSERTS = {"postgresql": pg_insert, "sqlite": sqlite_insert}


def upsert(model):
    """An INSERT for this backend that can say ON CONFLICT DO NOTHING."""
    return INSERTS[db.engine.dialect.name](model)
