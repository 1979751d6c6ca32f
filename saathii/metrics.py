"""Prometheus metrics: every metric the service exports, and the one-line hooks the rest
of the code calls (no-ops when METRICS_ENABLED is false).

Under gunicorn each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (a
fresh directory gunicorn.conf.py makes at each start) and /metrics sums the workers';
elsewhere (flask run, tests) the values live in this process.
"""
import os
import time
from contextlib import contextmanager
from functools import wraps

from flask import g, request
from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               multiprocess)
from prometheus_client.exposition import choose_encoder

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LIMITS = ("heartbeat", "favorite-changes", "presence-lookups")
SLOW_REASONS = ("queue_full", "send_timeout")
REFUSED_REASONS = ("full",)

HTTP_REQUESTS = Counter(
    "saathii_http_requests_total", "HTTP requests answered, by method, route template and "
    "status (101: a feed socket, counted once it has closed).", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "saathii_http_request_duration_seconds", "Time to answer an HTTP request, by route "
    "template (feed sockets left out).", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
FEED_SOCKETS = Gauge("saathii_feed_sockets", "Feed sockets open now.",
                     multiprocess_mode="livesum")
FEED_SOCKET_CAPACITY = Gauge(
    "saathii_feed_socket_capacity", "Feed sockets the service takes before it refuses new "
    "ones with 503 (the sum of its workers' capacities).", multiprocess_mode="livesum")
REFUSED_SOCKETS = Counter(
    "saathii_feed_sockets_refused_total", "Feed socket opens refused before the upgrade "
    "because the worker holds all the sockets it takes, by reason (full).", ["reason"])
SHED = Counter(
    "saathii_requests_shed_total", "Requests refused with 503 because the worker had more "
    "than it could serve: request (REST) or socket (a feed socket's open).", ["kind"])
EVENTS_PUBLISHED = Counter("saathii_events_published_total",
                           "Events published once their change committed, by type.", ["type"])
EVENTS_DELIVERED = Counter("saathii_events_delivered_total",
                           "Events queued for a feed socket of this service (one per socket).")
SLOW_SOCKETS = Counter(
    "saathii_feed_sockets_closed_slow_total", "Feed sockets closed because their client did "
    "not keep up: queue_full (too many messages waiting) or send_timeout (a send not "
    "drained in time).", ["reason"])
RELAY_UP = Gauge("saathii_relay_up", "1 when every worker's event relay is connected (or "
                 "none is in use: one process), else 0.", multiprocess_mode="livemin")
SWEEPS = Counter("saathii_sweeps_total", "Presence sweeps run here, by outcome (ok, failed).",
                 ["outcome"])
SWEEP_DURATION = Histogram("saathii_sweep_duration_seconds", "Time a presence sweep took.",
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
TAKEN_OFFLINE = Counter("saathii_users_taken_offline_total",
                        "Users the sweeper took offline (not seen within the timeout).")
HEARTBEAT_BATCH = Histogram("saathii_heartbeat_batch_size",
                            "Heartbeats written by one statement and one commit.",
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
RATE_LIMITED = Counter("saathii_rate_limited_total",
                       "Requests refused by a per-user rate limit, by limit.", ["limit"])

for _reason in SLOW_REASONS:  # every series exists from the start, at 0
    SLOW_SOCKETS.labels(_reason)
for _reason in REFUSED_REASONS:
    REFUSED_SOCKETS.labels(_reason)
for _kind in ("request", "socket"):
    SHED.labels(_kind)
for _limit in LIMITS:
    RATE_LIMITED.labels(_limit)
for _outcome in ("ok", "failed"):
    SWEEPS.labels(_outcome)

_enabled = True
_children = {}


def _child(metric, *labels):
    """metric.labels(*labels), remembered (labels() takes a lock and checks its input)."""
    key = (metric, labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def event_published(event_type):
    """An event went out after its commit."""
    if _enabled:
        _child(EVENTS_PUBLISHED, event_type).inc()


def events_delivered(count):
    """An event was queued for `count` sockets."""
    if _enabled and count:
        EVENTS_DELIVERED.inc(count)


def socket_closed_slow(reason):
    """A feed socket is being closed because its client does not keep up."""
    if _enabled:
        _child(SLOW_SOCKETS, reason).inc()


def socket_capacity(capacity):
    """This process takes `capacity` feed sockets."""
    if _enabled:
        FEED_SOCKET_CAPACITY.set(capacity)


def socket_refused(reason):
    """A feed socket open was refused before its upgrade."""
    if _enabled:
        _child(REFUSED_SOCKETS, reason).inc()


def request_shed(kind):
    """A request (or a socket's open) was refused under load."""
    if _enabled:
        _child(SHED, kind).inc()


def relay_up(up):
    """The event relay connected (True) or lost its connection (False)."""
    if _enabled:
        RELAY_UP.set(1 if up else 0)


def heartbeat_batch(size):
    """A batch of heartbeats is being written."""
    if _enabled:
        HEARTBEAT_BATCH.observe(size)


def rate_limited(limit):
    """A request was refused by a rate limit."""
    if _enabled:
        _child(RATE_LIMITED, limit).inc()


@contextmanager
def feed_socket():
    """Counts a feed socket as open while the block runs."""
    counted = _enabled
    if counted:
        FEED_SOCKETS.inc()
    try:
        yield
    finally:
        if counted:
            FEED_SOCKETS.dec()


def observed_sweep(sweep):
    """Decorates the sweep: counts it, times it and counts the users it took offline."""

    @wraps(sweep)
    def observed(*args, **kwargs):
        started = time.perf_counter()
        try:
            result = sweep(*args, **kwargs)
        except Exception:
            if _enabled:
                _child(SWEEPS, "failed").inc()
            raise
        if _enabled:
            _child(SWEEPS, "ok").inc()
            SWEEP_DURATION.observe(time.perf_counter() - started)
            TAKEN_OFFLINE.inc(result.taken_offline)
        return result

    return observed


def _request_started():
    g.metrics_started = time.perf_counter()


def _request_finished(response):
    route = request.url_rule.rule if request.url_rule else "unmatched"
    method = request.method if request.method in METHODS else "OTHER"
    started = g.get("metrics_started")
    if g.get("socket_served") is not None:
        status = "101"  # the socket's whole life: no request duration
    else:
        status = str(response.status_code)
        if started is not None:
            _child(HTTP_DURATION, route).observe(time.perf_counter() - started)
    _child(HTTP_REQUESTS, method, route, status).inc()
    return response


def exposition(accept=None):
    """The metrics in the format the scraper accepts (Prometheus text by default, or
    OpenMetrics), with its content type: summed over the workers in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


def init_app(app):
    """Count every request by route template (METRICS_ENABLED), and start the relay gauge
    at 1 when there is no relay to be down. The switch is per process: the last app made
    decides (a service process makes one)."""
    global _enabled
    _enabled = app.config["METRICS_ENABLED"]
    if not _enabled:
        return
    if app.config["EVENT_RELAY"] == "none":
        relay_up(True)
    app.before_request(_request_started)
    app.after_request(_request_finished)
