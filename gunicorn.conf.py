"""gunicorn settings for the Procfile's web process, read from the environment.

gevent workers hold each idle feed socket as a greenlet rather than an OS thread.
"""
import json
import os
import re

from gunicorn import util

from config import database_url, event_relay

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
# Events reach the sockets of other workers only through a relay (Redis, or PostgreSQL's
# LISTEN/NOTIFY): on SQLite alone, one worker (it holds thousands of sockets).
relay = event_relay(database_url(os.environ.get("DATABASE_URL")),
                    os.environ.get("REDIS_URL"), os.environ.get("EVENT_RELAY"))
workers = int(os.environ.get("WEB_CONCURRENCY") or (1 if relay == "none" else 2))
if workers > 1 and relay == "none":
    raise SystemExit(
        f"WEB_CONCURRENCY={workers} needs an event relay, or each worker's feed sockets "
        "miss the events of the others: set REDIS_URL, or use PostgreSQL (DATABASE_URL), "
        "or run one worker (WEB_CONCURRENCY=1)")
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# gunicorn 27's control socket has one fixed path per user: several services (or test
# processes) on one machine would fight over it, and nothing here uses it.
control_socket_disable = True
accesslog = "-"
# The path without its query string: the feed socket's ?token= never reaches the log.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


def post_worker_init(worker):
    """Start the presence sweeper in each worker (SCHEDULER_ENABLED; a lease keeps one
    sweep at a time) without waiting for a first request; on SIGTERM, close the feed
    sockets at once."""
    from saathii.scheduler import start_in_background

    start_in_background(worker.wsgi)
    close_sockets_on_exit(worker)


def close_sockets_on_exit(worker):
    """On SIGTERM gunicorn stops accepting and lets in-flight requests finish (up to
    graceful_timeout); feed sockets never finish by themselves, so they are closed with
    1012 (service restart) then, and clients reconnect at once to a live process."""
    import signal

    import gevent

    from saathii.realtime import KEY

    realtime = worker.wsgi.extensions.get(KEY)
    if realtime is None:  # another app under this file (bench/floor.py) holds no sockets
        return
    handle_exit = worker.handle_exit

    def exit_closing_sockets(sig, frame):
        handle_exit(sig, frame)
        gevent.spawn(realtime.shut_down)  # not in the handler: it may wait on a lock

    signal.signal(signal.SIGTERM, exit_closing_sockets)


TOKEN = re.compile(r"(token=)[^&\s\"']+")
REDACTED = r"\1[redacted]"


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own answers to requests it cannot parse (400, 414, 431...), as the
    service's JSON errors rather than an HTML page; a token in a request line is not
    echoed."""
    detail = f"{reason}: {TOKEN.sub(REDACTED, mesg)}" if mesg else reason
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


util.write_error = write_json_error  # the workers call util.write_error
