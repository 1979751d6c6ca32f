"""Deadlines on work that waits on a peer: a request body, a stalled database.

Under gunicorn's gevent workers (production) a deadline is a gevent Timeout: the
waiting greenlet is interrupted wherever it waits (a socket read, a pool checkout, a
query's answer) and raises DeadlineExceeded, which the error handlers answer. Elsewhere
(the development server's threads, the CLI) nothing can interrupt a blocking call, and
`deadline` does nothing: only socket timeouts bound those waits.
"""
import socket
import struct
import time
from contextlib import contextmanager

from flask import current_app, g, has_request_context, request
from gevent import Timeout
from gevent.monkey import is_module_patched


class DeadlineExceeded(Exception):
    """A wait outlived its deadline."""


def enforced():
    """Whether deadlines interrupt blocking calls here (gevent's patched sockets)."""
    return is_module_patched("socket")


@contextmanager
def deadline(seconds, what):
    """Raise DeadlineExceeded(what) in this greenlet if the block runs past `seconds`."""
    if not seconds or not enforced():
        yield
        return
    timer = Timeout(seconds, DeadlineExceeded(what))
    timer.start()
    try:
        yield
    finally:
        timer.close()


NO_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets


def reset_on_close(sock):
    """Make the socket's close a reset: what the client never read is dropped at once
    rather than held by the kernel while it probes a window that stays shut."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
    except OSError:
        pass  # closed already


@contextmanager
def socket_timeout(sock, seconds):
    """Give each read and write on `sock` at most `seconds` (restored afterwards)."""
    if sock is None or not seconds:
        yield
        return
    previous = sock.gettimeout()
    sock.settimeout(seconds)
    try:
        yield
    finally:
        try:
            sock.settimeout(previous)
        except OSError:  # closed meanwhile
            pass


def _start_request_deadline():
    """before_request (once the body is in): REQUEST_TIMEOUT_SECONDS for the rest; a feed
    socket's session bounds its own database work instead."""
    seconds = current_app.config["REQUEST_TIMEOUT_SECONDS"]
    rule = request.url_rule
    if not seconds or not enforced() or (rule is not None and rule.websocket):
        return
    g.deadline = Timeout(seconds, DeadlineExceeded("request"))
    g.deadline_at = time.monotonic() + seconds
    g.deadline.start()


def request_deadline():
    """When (time.monotonic()) the current request's deadline passes; None outside a
    request, or where deadlines are not enforced."""
    return g.get("deadline_at") if has_request_context() else None


def _end_request_deadline(error=None):
    timer = g.pop("deadline", None)
    if timer is not None:
        timer.close()


def init_app(app):
    """Give every request a deadline, from when its body has been read."""
    app.before_request(_start_request_deadline)
    app.teardown_request(_end_request_deadline)
