"""Every JSON error the service sends is built here."""
import logging
import random
import socket
from http import HTTPStatus

import orjson
from flask import jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.routing import WebsocketMismatch

from . import logs
from .deadline import DeadlineExceeded

HTTP_STATUS_PHRASES = {status.value: status.phrase for status in HTTPStatus}

log = logging.getLogger(__name__)

HTTP_DETAILS = {
    400: "Bad request",
    401: "Invalid or expired token",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large (the limit is 16 KiB)",
    415: "Content-Type must be application/json",
    429: "Too many requests",
}


class APIError(Exception):
    """An error answered as JSON: {"detail": ..., "errors"?: {...}}."""

    def __init__(self, status, detail, errors=None, headers=None, close=False):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.close = close  # end the connection once the answer is sent


def bad_request(detail, errors=None):
    """Return a 400 APIError."""
    return APIError(400, detail, errors)


def forbidden(detail):
    """Return a 403 APIError."""
    return APIError(403, detail)


def not_found(detail):
    """Return a 404 APIError."""
    return APIError(404, detail)


def unauthorized():
    """Return the one 401 every authentication failure gets."""
    return APIError(401, "Invalid or expired token", headers={"WWW-Authenticate": "Bearer"})


def too_many_requests(retry_after):
    """Return the 429 of a rate limit (saathii/rate_limits.py)."""
    return APIError(429, HTTP_DETAILS[429], headers={"Retry-After": str(retry_after)})


def restarting():
    """Return the 503 of a feed socket opening while this process stops."""
    return APIError(503, "Service restarting, connect again",
                    headers={"Retry-After": retry_after(1, 2)})


def retry_after(seconds, spread):
    """A Retry-After of `seconds` plus up to `spread` more, drawn per answer: clients
    refused together come back spread out, not as one wave."""
    return str(seconds + random.randint(0, spread))


def sockets_full():
    """Return the 503 of a feed socket opening on a process that holds all it takes."""
    return APIError(503, "Too many feed sockets on this server, connect again",
                    headers={"Retry-After": retry_after(1, 4)})


def overloaded():
    """Return the 503 of a request shed because the worker has more than it can serve."""
    return APIError(503, "Server busy, try again shortly",
                    headers={"Retry-After": retry_after(1, 2)})


def unavailable():
    """Return the 503 of a database that cannot answer now."""
    return APIError(503, "Service temporarily unavailable, try again shortly",
                    headers={"Retry-After": "5"})


def outcome_unknown():
    """Return the 503 of a change whose commit was cut short and whose outcome could not
    be read: it may be saved (every change is idempotent: sending it again is safe)."""
    return APIError(503, "The change may or may not have been saved; read it back, or "
                    "send it again", headers={"Retry-After": "5"})


def validation_error(err):
    """Turn a marshmallow ValidationError into a 400 naming each field and why."""
    messages = err.messages if isinstance(err.messages, dict) else {"_schema": err.messages}
    parts = []
    for field, problems in messages.items():
        text = problems[0] if isinstance(problems, list) and problems else problems
        if isinstance(text, dict):
            text = "invalid value"
        text = str(text).rstrip(".")
        parts.append(f"{field}: {text}" if field != "_schema" else text)
    return APIError(400, "; ".join(parts) or "Invalid input", errors=messages)


def wsgi_error(environ, start_response, error):
    """Answer an APIError below Flask (no request context: the cheapest answer there is,
    for a request refused before the app sees it), with a request id like every other."""
    body = orjson.dumps({"detail": error.detail})
    start_response(f"{error.status} {HTTP_STATUS_PHRASES[error.status]}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        (logs.HEADER, logs.request_id_for(environ)), *error.headers.items()])
    return [body]


def error_response(status, detail, errors=None, headers=None, close=False):
    """Build the JSON response for an error."""
    body = {"detail": detail}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    if close:
        _close_after(response)
    return response


def _close_after(response):
    """Shut the connection down once the response is sent (servers ignore an app's
    Connection header)."""
    response.headers["Connection"] = "close"
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is not None:
        def shut():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        response.call_on_close(shut)


def register_error_handlers(app):
    """Answer every error, expected or not, as JSON."""

    @app.errorhandler(APIError)
    def handle_api_error(err):
        return error_response(err.status, err.detail, err.errors, err.headers, err.close)

    @app.errorhandler(ValidationError)
    def handle_validation_error(err):
        return handle_api_error(validation_error(err))

    @app.errorhandler(HTTPException)
    def handle_http_exception(err):
        detail = HTTP_DETAILS.get(err.code) or err.name
        if isinstance(err, WebsocketMismatch):
            detail = "This endpoint needs a WebSocket upgrade"
        headers = {}
        if err.code == 405 and err.valid_methods:
            headers["Allow"] = ", ".join(sorted(err.valid_methods))
        return error_response(err.code, detail, headers=headers)

    @app.errorhandler(PoolTimeout)
    @app.errorhandler(DeadlineExceeded)
    def handle_timeout(err):
        log.error("request ran out of time (%s)", err)
        return handle_api_error(unavailable())

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def handle_database_error(err):
        if isinstance(err, OperationalError) or getattr(err, "connection_invalidated", False):
            log.error("database unavailable: %s", err.__class__.__name__)
            return handle_api_error(unavailable())
        log.exception("database error")
        return error_response(500, "Internal server error")

    @app.errorhandler(Exception)
    def handle_unexpected(err):
        log.exception("unhandled error")
        return error_response(500, "Internal server error")
