"""Answers a client must take in time: a connection that has not taken its whole answer
within RESPONSE_SEND_TIMEOUT_SECONDS is closed.

The kernel takes the first part of any answer at once; past that, a client that reads
slowly (a hundred bytes a second) would hold its connection, and the worker's attention,
for as long as it likes. Under gunicorn's gevent worker a socket's timeout bounds each
write (gevent counts it over the whole call), so the body reaches gunicorn as it is,
each part with what remains of the deadline as the socket's timeout; a client still
reading when it passes has its connection reset (what the kernel still holds for it is
dropped), and the log says so in one line. Each connection's send buffer is capped
(SEND_BUFFER_BYTES), or the kernel would take a megabyte answer at once. Elsewhere (the
development server) nothing is bounded. Cost: nothing for an answer of a known length
under SMALL_ANSWER_BYTES (the kernel takes it whole at once); three socket calls for a
larger one, which gunicorn then writes in parts (a file too: not by sendfile).
"""
import logging
import socket
import time

from .deadline import reset_on_close

log = logging.getLogger(__name__)

SOCKET_ERROR = "Socket error processing request."
SOCKET_SERVED = "saathii.socket_served"  # set in the environ by the feed's view
SEND_BUFFER_BYTES = 128 * 1024  # the kernel doubles it; REST answers are far smaller
# An answer this small (most REST answers) fits a socket's send buffer whole from the
# start (Linux's default tcp_wmem), so it is handed over as it is: the bound costs it
# nothing, where wrapping every answer slowed the hot paths (BENCHMARKS.md).
SMALL_ANSWER_BYTES = 16 * 1024


class BoundedWrite:
    """WSGI middleware: every answer's body given RESPONSE_SEND_TIMEOUT_SECONDS in all."""

    def __init__(self, app, seconds):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        length = []

        def starting(status, headers, exc_info=None):
            length.extend(value for name, value in headers if name.lower() == "content-length")
            return start_response(status, headers, exc_info)

        body = self.app(environ, starting)
        sock = environ.get("gunicorn.socket")
        if sock is None or environ.get(SOCKET_SERVED):
            return body  # a feed socket, served and closed: it bounded its own sends
        if length and length[0].isdigit() and int(length[0]) <= SMALL_ANSWER_BYTES:
            return body  # the kernel takes it at once: no reader can hold the worker
        return TimedBody(body, sock, self.seconds)


class TimedBody:
    """A response body whose parts are written before a deadline."""

    def __init__(self, body, sock, seconds):
        self.body = body
        self.sock = sock
        self.seconds = seconds
        self.previous = None
        self.written = False

    def __iter__(self):
        deadline = time.monotonic() + self.seconds
        self.previous = self.sock.gettimeout()
        # The kernel would otherwise take megabytes at once and go on delivering them
        # after the connection is closed.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        for part in self.body:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            yield part
        self.written = True  # gunicorn asks for the next part once the last is written

    def close(self):
        try:
            self.sock.settimeout(self.previous)
        except OSError:
            pass  # closed already
        if not self.written:  # cut off: reset, dropping what the kernel still holds
            reset_on_close(self.sock)
        if hasattr(self.body, "close"):
            self.body.close()


class SlowReaderLog(logging.Filter):
    """gunicorn logs a socket's timeout as an error with its traceback; a slow reader cut
    off is expected: one warning line instead."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if record.getMessage() == SOCKET_ERROR and isinstance(exc, TimeoutError):
            log.warning("a client did not take its answer in time; its connection was closed")
            return False
        return True


def init_app(app):
    """Bound every answer's writing (RESPONSE_SEND_TIMEOUT_SECONDS; 0: unbounded)."""
    seconds = app.config["RESPONSE_SEND_TIMEOUT_SECONDS"]
    if seconds:
        app.wsgi_app = BoundedWrite(app.wsgi_app, seconds)
        gunicorn_log = logging.getLogger("gunicorn.error")
        if not any(isinstance(known, SlowReaderLog) for known in gunicorn_log.filters):
            gunicorn_log.addFilter(SlowReaderLog())
