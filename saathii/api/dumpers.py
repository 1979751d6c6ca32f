"""Response bodies dumped through their marshmallow schemas, at the cost of building dicts.

schema.dump checks and converts every value of every field: on a page of 100 presences
that is a third of the request's cost (BENCHMARKS.md). The values the
domain hands to a view are already of their fields' types (ints, strings, booleans,
datetimes), so a dumper made once from a schema's fields only picks them in the schema's
order, under their data keys, and writes datetimes as the schema's UTCDateTime does. The
schema stays the one definition of each answer's shape; tests/test_docs.py checks every
response schema's dumper against schema.dump.
"""
from marshmallow import fields

from ..clock import isoformat
from ..fields import UTCDateTime

# Fields whose values the domain hands over as they are dumped.
PLAIN = (fields.Integer, fields.Boolean, fields.String, fields.Float)


def dumper(schema):
    """A function that dumps what schema.dump dumps (for one object, or a list of them if
    the schema is many=True), made from the schema's fields."""
    picks = [(name, field.data_key or name, _converter(field))
             for name, field in schema.dump_fields.items()]

    def dump_one(value):
        return {key: value[name] if convert is None else convert(value[name])
                for name, key, convert in picks}

    if schema.many:
        return lambda values: [dump_one(value) for value in values]
    return dump_one


def _timestamp(value):
    # A timestamp the domain wrote already (a presence is also an event's data, written
    # once for both) is kept as it is.
    return value if value is None or isinstance(value, str) else isoformat(value)


def _converter(field):
    """How a field's value is dumped: None if as it is."""
    if isinstance(field, UTCDateTime):
        return _timestamp
    if isinstance(field, fields.Nested):
        return dumper(field.schema)
    if isinstance(field, fields.List):
        inner = _converter(field.inner)
        return list if inner is None else (lambda values: [inner(v) for v in values])
    if isinstance(field, PLAIN):
        return None
    raise TypeError(f"no dumper for a {type(field).__name__} field ({field.name}): add one "
                    "here, and a case to tests/test_docs.py")
