"""Logging: the service's level and format (LOG_FORMAT), a request id on every response
and log line, and no access token in any line."""
import logging
import re
import uuid

from flask import g, has_request_context, request

from logformat import RedactTokens, StderrHandler, formatter, redact  # noqa: F401

HEADER = "X-Request-ID"
# A client's own id is kept when it is a short token of letters, digits, -, _ and .
SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
PROBE_LINE = re.compile(r"[A-Z]+ /(healthz|readyz)[ ?]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the development server colours its lines


class RequestContext(logging.Filter):
    """Adds what is known of the current request to each record: its id, user, method
    and route (nothing outside a request)."""

    def filter(self, record):
        if has_request_context():
            record.request_id = g.get("request_id")
            record.user_id = g.get("user_id") or g.get("feed_user_id")
            record.method = request.method
            record.route = request.url_rule.rule if request.url_rule else None
        return True


class QuietProbes(logging.Filter):
    """Keeps successful health probes out of the development server's access log."""

    def filter(self, record):
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 2:
            return True
        line, status = (ANSI.sub("", str(arg)) for arg in args[:2])
        return not (PROBE_LINE.match(line) and status.isdigit() and int(status) < 500)


def _once(logger, kind):
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def configure_logging(level, log_format="text"):
    """Set the level, and write the app's records to stderr in LOG_FORMAT, unless
    something else (a test runner) configured logging first, as basicConfig would."""
    werkzeug = logging.getLogger("werkzeug")  # the development server's request lines
    _once(werkzeug, RedactTokens)
    _once(werkzeug, QuietProbes)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        if root.handlers:
            return
        handler = StderrHandler()
        handler.addFilter(RequestContext())
        root.addHandler(handler)
    root.setLevel(level)
    handler.setFormatter(formatter(log_format))


def request_id_for(environ):
    """The client's X-Request-ID when sane, else a new one; kept in the environ for
    gunicorn's access log."""
    sent = environ.get("HTTP_X_REQUEST_ID")
    request_id = sent if sent and SANE_ID.fullmatch(sent) else uuid.uuid4().hex
    environ["saathii.request_id"] = request_id
    return request_id


def assign_request_id():
    """before_request: the request's id (request_id_for)."""
    g.request_id = request_id_for(request.environ)


def tag_response(response):
    """after_request: the id on the response, and what gunicorn's access log reports."""
    request_id = g.get("request_id")
    if request_id is None:  # a before_request hook failed before ours ran
        assign_request_id()
        request_id = g.request_id
    response.headers[HEADER] = request_id
    environ = request.environ
    environ["saathii.route"] = request.url_rule.rule if request.url_rule else None
    environ["saathii.user_id"] = g.get("user_id") or g.get("feed_user_id")
    return response


def init_app(app):
    """Give every request an id, first of all before-request hooks."""
    app.before_request_funcs.setdefault(None, []).insert(0, assign_request_id)
    app.after_request(tag_response)
