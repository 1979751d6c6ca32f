"""Admission: under more load than a worker can serve, the excess is refused at once.

A gevent worker accepts every connection it has room for, and each request is a greenlet
that wants its share of the core: past what the worker can serve, every request slows,
queues for seconds and times out, acknowledged or not. Here at most ADMISSION_MAX_ACTIVE
requests of a worker are at work at once; up to ADMISSION_MAX_WAITING more wait for one
to finish, in arrival order and each at most ADMISSION_MAX_WAIT_SECONDS; the rest, and
those that wait too long, get 503 with Retry-After before any of their work is done (a
slot is taken once the body is in: a client sending slowly holds none).
A refused connection's next request is then read only after a pause (a second at most),
and a caller (by its credentials) that comes back sooner than Retry-After told it may
take a free slot but not a place in line: a client that ignores Retry-After would
otherwise keep the worker busy refusing it, and hold the line against those that wait
as told. Health probes and /metrics are never refused. Cost: a lock and a counter a
request.
"""
import logging
import random
import threading
import time
from collections import deque
from contextlib import contextmanager

from flask import current_app, g, request

from . import metrics
from .errors import overloaded, wsgi_error

log = logging.getLogger(__name__)
# Shedding is said to have ended once nothing was refused for this long.
QUIET_SECONDS = 5
# A caller refused is told to come back in a second or more (Retry-After); one that comes
# back sooner may take a free slot, but not a place in line before those who waited.
RETRY_SOONEST_SECONDS = 1
MAX_REMEMBERED = 10000
# Answered whatever the load: an operator or a router must see the process.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
KEY = "saathii_admission"


class Admission:
    """How many requests of this worker may be at work, and how many may wait."""

    def __init__(self, max_active, max_waiting, max_wait_seconds, yielding_wait_seconds):
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.max_wait = max_wait_seconds
        self.yielding_wait = yielding_wait_seconds
        self.lock = threading.Lock()
        self.active = 0
        # One Event a waiter, set once a slot is handed to it: requests, then yielding
        # callers (feed sockets' greetings), each line in arrival order.
        self.waiting = deque()
        self.yielding = deque()
        self.refused = 0  # since shedding began (0: not shedding)
        self.last_refusal = 0.0
        self.refusals = {}  # caller -> when it was last refused (monotonic)

    def refused_lately(self, caller):
        """Whether `caller` was refused less than RETRY_SOONEST_SECONDS ago: it did not
        wait as told, and may take a free slot but not a place in line."""
        when = self.refusals.get(caller)
        return when is not None and time.monotonic() - when < RETRY_SOONEST_SECONDS

    def remember_refusal(self, caller):
        """Note that `caller` was refused now (old notes go once there are many)."""
        now = time.monotonic()
        if len(self.refusals) >= MAX_REMEMBERED:
            self.refusals = {key: when for key, when in self.refusals.items()
                             if now - when < RETRY_SOONEST_SECONDS}
        self.refusals[caller] = now

    def enter(self, yielding=False, may_wait=True):
        """Take a slot, waiting for one in turn if need be; False when refused. A
        `yielding` caller (a feed socket's greeting: cheap to keep waiting, and a surge
        of them must not slow requests) gets a slot only when no request waits for one,
        and waits up to its own, longer bound in a line of its own."""
        with self.lock:
            if self.active < self.max_active:  # then nobody waits: slots are handed on
                self.active += 1
                if self.refused and time.monotonic() - self.last_refusal > QUIET_SECONDS:
                    log.warning("load shedding ended: %d refused", self.refused)
                    self.refused = 0
                return True
            line, wait = (self.yielding, self.yielding_wait) if yielding else (
                self.waiting, self.max_wait)
            if not (wait and may_wait) or (not yielding and len(line) >= self.max_waiting):
                return self._refuse()
            turn = threading.Event()
            line.append(turn)
        if turn.wait(wait):
            return True
        with self.lock:
            if turn.is_set():  # handed a slot as the wait ran out: keep it
                return True
            line.remove(turn)
            return self._refuse()

    def _refuse(self):
        """Count a refusal (the lock held); the log says once when shedding begins."""
        if not self.refused:
            log.warning("shedding load: %d at work, %d requests and %d sockets waiting; "
                        "refusing more with 503", self.active, len(self.waiting),
                        len(self.yielding))
        self.refused += 1
        self.last_refusal = time.monotonic()
        return False

    def leave(self):
        """Give a slot back: to the longest waiting request, else to the longest waiting
        yielding caller, else free."""
        with self.lock:
            if self.waiting or self.yielding:
                (self.waiting or self.yielding).popleft().set()  # active stays
            else:
                self.active -= 1

    def turn_away(self, may_wait=True):
        """Refuse a request now if it could neither take a slot nor wait for one; return
        whether it was refused."""
        if self.active < self.max_active or (may_wait and len(self.waiting) < self.max_waiting):
            return False  # read without the lock: a request let through still enters()
        with self.lock:
            self._refuse()
        return True


class AdmissionMiddleware:
    """WSGI middleware: while the line is full, a request is refused before Flask sees it
    (the cheapest answer there is: a flood spends the least on it)."""

    def __init__(self, wsgi_app, admission, pause_seconds):
        self.wsgi_app = wsgi_app
        self.admission = admission
        self.pause = pause_seconds

    def __call__(self, environ, start_response):
        if exempt(environ):
            return self.wsgi_app(environ, start_response)
        caller = environ["saathii.caller"] = caller_of(environ)
        may_wait = environ["saathii.may_wait"] = not self.admission.refused_lately(caller)
        if not self.admission.turn_away(may_wait):
            return self.wsgi_app(environ, start_response)
        shed(environ, self.admission)
        return Paused(wsgi_error(environ, start_response, overloaded()), self.pause)


class Paused:
    """A response body after which the server waits before it reads the connection's
    next request (servers call close() once the body is sent)."""

    def __init__(self, body, pause):
        self.body = body
        self.seconds = random.uniform(pause / 2, pause)

    def __iter__(self):
        return iter(self.body)

    def close(self):
        time.sleep(self.seconds)  # a timer under gevent: the connection waits, not a core


def exempt(environ):
    """Health probes, /metrics and socket upgrades (a socket's greeting takes a yielding
    slot in the feed's view) are not admitted here."""
    return (environ.get("PATH_INFO") in EXEMPT_PATHS
            or environ.get("HTTP_UPGRADE", "").lower() == "websocket")


def caller_of(environ):
    """Who asks, for telling those that retry sooner than told: their credentials (no
    token is checked here), else their address."""
    return environ.get("HTTP_AUTHORIZATION") or environ.get("REMOTE_ADDR")


def shed(environ, control):
    """Count a refused request and remember its caller; it stays out of the access log (a
    flood would fill it)."""
    metrics.request_shed("request")
    control.remember_refusal(environ["saathii.caller"])
    environ["saathii.shed"] = True


def admit():
    """before_request, once the body is in (a client sending slowly holds no slot): take
    a slot, waiting in turn, or 503."""
    environ = request.environ
    if exempt(environ):
        return
    control = admission()
    if not control.enter(may_wait=environ["saathii.may_wait"]):
        shed(environ, control)
        g.admission_pause = current_app.config["ADMISSION_REFUSED_PAUSE_SECONDS"]
        raise overloaded()
    g.admitted = True


def pause_after_refusal(response):
    """after_request: a refused connection's next request is read after the pause."""
    pause = g.get("admission_pause")
    if pause:
        response.call_on_close(Paused((), pause).close)
    return response


def release(exc=None):
    """teardown_request (before the body is sent): give the slot back."""
    if g.pop("admitted", False):
        admission().leave()


@contextmanager
def greeting_slot():
    """A feed socket's greeting is read in a slot that waiting requests come before: a
    surge of socket opens waits its turn (up to REQUEST_TIMEOUT_SECONDS, then 503 with a
    jittered Retry-After) rather than slowing REST."""
    control = admission()
    if control is None:
        yield
        return
    if not control.enter(yielding=True):
        metrics.request_shed("socket")
        raise overloaded()
    try:
        yield
    finally:
        control.leave()


def admission():
    """The current app's Admission, or None when admission is off."""
    return current_app.extensions.get(KEY)


def init_app(app):
    """Admission control (ADMISSION_MAX_ACTIVE; 0 turns it off): a before_request hook
    that takes the slot once the body is in, and a middleware that refuses cheaply while
    the line is full. Called right after the body is read, before the request's deadline
    starts."""
    config = app.config
    if not config["ADMISSION_MAX_ACTIVE"]:
        return
    control = app.extensions[KEY] = Admission(
        config["ADMISSION_MAX_ACTIVE"], config["ADMISSION_MAX_WAITING"],
        config["ADMISSION_MAX_WAIT_SECONDS"], config["REQUEST_TIMEOUT_SECONDS"])
    app.before_request(admit)
    app.after_request(pause_after_refusal)
    app.teardown_request(release)
    app.wsgi_app = AdmissionMiddleware(app.wsgi_app, control,
                                       config["ADMISSION_REFUSED_PAUSE_SECONDS"])
