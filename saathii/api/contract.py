"""The API's contract, declared on each view: what it takes (@body, @arguments,
@path_ids), what it answers (@response) and which errors it may give (@other_responses).

The decorators do the work they declare (validate the input, dump the answer through its
schema) and record it on the view; saathii/openapi.py writes the OpenAPI document from the
routes and these records, so the document describes the code that serves. Put them
below @authenticate and any rate limit: input is read once the caller may send it.
"""
from functools import wraps

from flask import request

from ..errors import bad_request
from ..fields import is_id
from . import json_body
from .dumpers import dumper

BODY_ERRORS = (400, 413, 415)  # a body can be malformed, too large or not JSON
ERROR_DESCRIPTIONS = {
    400: "Invalid input", 401: "Missing, invalid or expired token", 404: "Not found",
    409: "Not possible in the current state (wait_time while not busy, or a status "
         "changed concurrently)",
    413: "Body over 16 KiB", 415: "Body is not JSON", 429: "Rate limit exceeded",
    503: "Database unavailable",
}


def contract_of(view):
    """What a view declared: {"body", "arguments", "path_ids", "response", "errors"}
    (empty if it declared nothing: it is not part of the API document)."""
    return getattr(view, "contract", {})


def _declare(view, **parts):
    contract = view.__dict__.setdefault("contract", {"errors": set()})
    errors = parts.pop("errors", ())
    contract.update(parts)
    contract["errors"].update(errors)
    return view


def body(schema):
    """The view takes a JSON object body loaded by schema, as its first argument."""
    def decorate(view):
        @wraps(view)
        def with_body(*args, **kwargs):
            return view(json_body(schema), *args, **kwargs)
        return _declare(with_body, body=schema, errors=BODY_ERRORS)
    return decorate


def arguments(schema):
    """The view takes the query string loaded by schema, as its first argument."""
    def decorate(view):
        @wraps(view)
        def with_arguments(*args, **kwargs):
            return view(schema.load(request.args.to_dict(flat=True)), *args, **kwargs)
        return _declare(with_arguments, arguments=schema, errors=(400,))
    return decorate


def path_ids(**described):
    """The view's path parameters named here are ids (1 to 2**63-1), passed as ints; a
    value that is not one is a 400 naming it. Each is documented with its description."""
    def decorate(view):
        @wraps(view)
        def with_ids(*args, **kwargs):
            for name in described:
                value = kwargs[name]
                if not is_id(value):
                    raise bad_request(f"{name} must be a positive integer",
                                      {name: ["Not a valid id."]})
                kwargs[name] = int(value)
            return view(*args, **kwargs)
        return _declare(with_ids, path_ids=described, errors=(400,))
    return decorate


def response(schema, headers=None):
    """The view's answer, 200, dumped through schema: the view returns the data, or (the
    data, headers); `headers` documents the headers it sets ({name: description})."""
    dump = dumper(schema)

    def decorate(view):
        @wraps(view)
        def with_response(*args, **kwargs):
            answer = view(*args, **kwargs)
            if isinstance(answer, tuple):
                data, sent = answer
                return dump(data), 200, sent
            return dump(answer)
        return _declare(with_response, response=(schema, headers or {}))
    return decorate


def other_responses(*codes):
    """The errors the view may answer besides those every request may meet (400, 401,
    503) and those its input brings."""
    unknown = set(codes) - set(ERROR_DESCRIPTIONS)
    if unknown:
        raise ValueError(f"no description for status {sorted(unknown)}")

    def decorate(view):
        return _declare(view, errors=codes)
    return decorate
