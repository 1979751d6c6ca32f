"""Log formats shared by the app and gunicorn's error and access logs: readable text, or
one JSON object per line (LOG_FORMAT=json). Neither ever carries an access token.

Outside the saathii package on purpose: gunicorn's master reads it (gunicorn.conf.py) and
must not import the app, which its workers load after gevent has patched them.
"""
import json
import logging
import os
import re
import sys
from datetime import datetime, timedelta, timezone

from gunicorn import glogging

FORMATS = ("text", "json")
# Paths of the health probes: their access lines are dropped unless they fail.
PROBES = frozenset({"/healthz", "/readyz"})
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
# What a request adds to a line (set on the record by saathii.logs, or by the access log).
CONTEXT = ("request_id", "user_id", "method", "route", "status", "duration_ms")

MILLISECOND = timedelta(milliseconds=1)

TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"']+")
BEARER = re.compile(r"(bearer\s+)[^\s\"',;]+", re.IGNORECASE)
# A JWT anywhere (a path, a malformed header): its header always starts `{"`, base64 eyJ.
JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")


def redact(text):
    """Replace every token= value, bearer credential and JWT in a line."""
    if "token=" in text:
        text = TOKEN_IN_QUERY.sub(r"\1[redacted]", text)
    if "eyJ" in text:
        text = JWT.sub("[redacted]", text)
    if "earer" in text:
        text = BEARER.sub(r"\1[redacted]", text)
    return text


def log_format(value=None):
    """LOG_FORMAT (text by default), checked."""
    value = (value if value is not None else os.environ.get("LOG_FORMAT") or "text").lower()
    if value not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


class RedactTokens(logging.Filter):
    """Removes tokens from a record's message and arguments, for handlers other than
    ours (pytest's, say); our formatters redact their whole output anyway."""

    def filter(self, record):
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


class TextFormatter(logging.Formatter):
    """gunicorn's own line layout, the request id appended when there is one."""

    def __init__(self, fmt=TEXT_FORMAT):
        super().__init__(fmt, DATE_FORMAT)

    def format(self, record):
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id and record.name != "gunicorn.access":
            line += f" (request_id={request_id})"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message and what is known of
    the request (request_id, user_id, method, route, status, duration_ms)."""

    def format(self, record):
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


def formatter(kind=None):
    """The formatter of a LOG_FORMAT."""
    return JsonFormatter() if log_format(kind) == "json" else TextFormatter()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (test runners replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _status(resp):
    try:
        return int(str(resp.status).split(None, 1)[0])
    except (ValueError, IndexError):
        return 0


def _or_dash(value):
    return "-" if value is None else value


class GunicornLogger(glogging.Logger):
    """gunicorn's logs in the service's format: tokens redacted from its error log (a
    malformed request line is logged whole), successful health probes and requests shed
    under load left out of the access log, and its access lines in the service's layout
    (gunicorn's access_log_format is not read): one object each with LOG_FORMAT=json."""

    def setup(self, cfg):
        super().setup(cfg)
        self.json = log_format() == "json"
        for log, fmt in ((self.error_log, None), (self.access_log, "%(message)s")):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter() if self.json else TextFormatter(
                    fmt or self.error_fmt))

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        if environ.get("saathii.shed"):
            return  # a flood's refusals: counted in /metrics, said once in the error log
        path = environ.get("PATH_INFO") or ""
        status = _status(resp)
        level = logging.INFO
        if path in PROBES:
            if status < 500:
                return  # probes come every few seconds; only a failing one is news
            level = logging.WARNING
        method = environ.get("REQUEST_METHOD")
        if not self.json:
            # The service's own layout, written directly: gunicorn's atoms (every request
            # header, a formatted time) cost a heartbeat an eighth of its CPU
            # (BENCHMARKS.md); the path without its query (the feed's ?token= never
            # shows), status, bytes sent, milliseconds and the request id.
            self.access_log.log(level, '%s "%s %s %s" %s %s %dms request_id=%s',
                                environ.get("REMOTE_ADDR") or "-", method, path,
                                environ.get("SERVER_PROTOCOL"), status,
                                _or_dash(getattr(resp, "sent", None)),
                                request_time / MILLISECOND,
                                environ.get("saathii.request_id") or "-")
            return
        self.access_log.log(level, "%s %s %s", method, path, status, extra={
            "request_id": environ.get("saathii.request_id"),
            "user_id": environ.get("saathii.user_id"), "method": method,
            "route": environ.get("saathii.route"), "status": status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3)})
