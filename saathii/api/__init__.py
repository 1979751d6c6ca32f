"""HTTP blueprints, one per resource, and the request-parsing helpers they share."""
import json

from flask import current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..deadline import DeadlineExceeded, deadline, socket_timeout
from ..errors import APIError, bad_request

METHODS_WITH_BODIES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def read_body():
    """before_request: read the whole body first, within REQUEST_BODY_TIMEOUT_SECONDS,
    so that no request holds a database connection while its client sends slowly; a
    body that does not arrive in time is a 408, a malformed one a 400 (both close the
    connection: what is left of the body cannot be told from a next request)."""
    if request.method not in METHODS_WITH_BODIES or not (
            request.content_length or "Transfer-Encoding" in request.headers):
        return
    seconds = current_app.config["REQUEST_BODY_TIMEOUT_SECONDS"]
    environ = request.environ
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    try:
        with deadline(seconds, "request body"), socket_timeout(sock, seconds):
            raw = request.get_data(cache=True)
    except (DeadlineExceeded, TimeoutError):
        raise APIError(408, "Request body not received in time", close=True) from None
    except HTTPException as err:
        if isinstance(err.__context__, TimeoutError):  # the development server's way
            raise APIError(408, "Request body not received in time", close=True) from None
        raise
    except Exception:  # noqa: BLE001 - the server's parse errors (a bad chunk size, a
        # missing terminator) or a client that went away: the body is unusable
        raise APIError(400, "Malformed request body", close=True) from None
    if request.content_length is not None and len(raw) != request.content_length:
        # The client ended its side before the whole body: never act on a prefix.
        raise APIError(400, "Malformed request body", close=True)
    if request.content_length is None and len(raw) >= current_app.config["MAX_CONTENT_LENGTH"]:
        # A chunked body is cut at the limit rather than refused: refuse it here.
        raise RequestEntityTooLarge()


def json_body(schema):
    """Load and validate the request's JSON object body with a marshmallow schema."""
    raw = request.get_data(cache=True)
    if not raw:
        raise bad_request("Request body is required")
    if not request.is_json:
        raise APIError(415, "Content-Type must be application/json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("Malformed JSON body") from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object")
    return schema.load(data)
