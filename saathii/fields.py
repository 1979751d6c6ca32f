"""marshmallow fields with the strictness a public API needs."""
import re

from marshmallow import ValidationError, fields, validate

from .clock import isoformat

MAX_ID = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,30}")


def is_id(text, minimum=1):
    """Whether text is an id (minimum to 2**63-1) written in plain decimal digits."""
    return (text.isascii() and text.isdigit() and len(text) <= 19
            and minimum <= int(text) <= MAX_ID)


class StrictInteger(fields.Integer):
    """A JSON integer: no strings, floats or booleans."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """A JSON true or false: no 1, 0 or strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class QueryInteger(fields.Integer):
    """An integer written in a query string as plain decimal digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _INTEGER.fullmatch(value):
            raise self.make_error("invalid")
        return int(value)


class QueryBoolean(fields.Boolean):
    """A query-string boolean: true, false, 1 or 0."""

    def __init__(self, **kwargs):
        super().__init__(truthy={"true", "1"}, falsy={"false", "0"}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or value not in self.truthy | self.falsy:
            raise ValidationError("Must be one of true, false, 1, 0.")
        return value in self.truthy


class UTCDateTime(fields.DateTime):
    """An ISO 8601 UTC timestamp with a Z suffix."""

    def _serialize(self, value, attr, obj, **kwargs):
        return isoformat(value)


def user_id_field(**kwargs):
    """A JSON body field holding a user id (1 to 2**63-1)."""
    return StrictInteger(validate=validate.Range(1, MAX_ID), **kwargs)


def query_id_field(min_value=1, **kwargs):
    """A query-string field holding an id (min_value to 2**63-1)."""
    return QueryInteger(validate=validate.Range(min_value, MAX_ID), **kwargs)
