"""JSON responses written by orjson, with Flask's own rules for what it cannot write."""
import orjson
from flask.json.provider import DefaultJSONProvider

# Dates, datetimes and dataclasses go through Flask's `default`, as Flask writes them;
# orjson writes the rest several times faster than the json module.
OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
           | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_APPEND_NEWLINE)


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with orjson writing compact responses."""

    sort_keys = False

    def response(self, *args, **kwargs):
        """A JSON response of the arguments, as Flask's provider makes it."""
        # self._app: where Flask's JSONProvider documents that it keeps its app.
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(*args, **kwargs)  # indented for people
        obj = _response_object(args, kwargs)
        try:
            body = orjson.dumps(obj, default=self.default, option=OPTIONS)
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)


def _response_object(args, kwargs):
    """What jsonify(*args, **kwargs) writes, by Flask's documented rules: nothing is
    null, one argument is itself, several are a list, keywords are an object."""
    if args and kwargs:
        raise TypeError("app.json.response() takes either args or kwargs, not both")
    if not args and not kwargs:
        return None
    return args[0] if len(args) == 1 else (list(args) or kwargs)
