"""The API's contract, declared on each view: what it takes (@body, @arguments,
@path_ids), what it answers (@response) and which errors it may give (@other_responses).

The decorators do the work they declare (validate the input, dump the answer through its
schema) and record it on the view; saathii/openapi.py writes the OpenAPI document from the
routes and these records, so the document describes the code that serves. Put them
below @authenticate and any rate limit: input is read once the caller may send it.
"""
from functools import wraps

from flask import Response, g, request

from ..errors import bad_request
from ..fields import is_id
from ..realtime import trusted_changes
from ..revalidation import etag_of
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


def revalidated(depends_on):
    """The view's answer carries a weak ETag, and a matching If-None-Match gets 304 Not
    Modified, from this process's memory when nothing heard since touches the answer
    (saathii/revalidation.py). depends_on(data) names what the answer shows: (the users
    whose presence, the user whose favorites or None); it is asked only of conditional
    requests (it may read: a client that never revalidates costs nothing more). Put it
    below @authenticate and any rate limit, above the input's decorators: a 304 from
    memory reads nothing."""
    def decorate(view):
        @wraps(view)
        def with_etag(*args, **kwargs):
            conditional = bool(request.if_none_match)
            changes = trusted_changes() if conditional else None
            key = (request.endpoint, g.user_id, request.path, request.query_string)
            if changes is not None:
                known = changes.current(key)
                if known is not None and request.if_none_match.contains_weak(known):
                    return _not_modified(known)
                mark = changes.mark()
            data, status, headers = _parts(view(*args, **kwargs))
            etag = etag_of(data)
            if changes is not None:
                changes.remember(key, etag, mark, *depends_on(data))
            if conditional and request.if_none_match.contains_weak(etag):
                return _not_modified(etag)
            return data, status, {**headers, "ETag": f'W/"{etag}"'}
        return _declare(with_etag, revalidated=True)
    return decorate


def _parts(answer):
    if isinstance(answer, tuple):
        data, status, headers = answer
        return data, status, dict(headers)
    return answer, 200, {}


def _not_modified(etag):
    return Response(status=304, headers={"ETag": f'W/"{etag}"'})


def other_responses(*codes):
    """The errors the view may answer besides those every request may meet (400, 401,
    503) and those its input brings."""
    unknown = set(codes) - set(ERROR_DESCRIPTIONS)
    if unknown:
        raise ValueError(f"no description for status {sorted(unknown)}")

    def decorate(view):
        return _declare(view, errors=codes)
    return decorate
