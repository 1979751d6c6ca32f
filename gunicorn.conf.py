"""gunicorn settings for the Procfile's web process, read from the environment.

gevent workers hold each idle feed socket as a greenlet rather than an OS thread.
"""
import os
import shutil
import tempfile

import gunicorn_errors
from config import Config, database_url, event_relay
from logformat import GunicornLogger, log_format

try:
    log_format()  # a wrong LOG_FORMAT stops the start here, not in every worker
except ValueError as err:
    raise SystemExit(str(err)) from None

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
worker_connections = Config.WORKER_CONNECTIONS  # the app sizes its feed sockets from it
timeout = 30
graceful_timeout = 20
keepalive = 5
# gunicorn 27's control socket has one fixed path per user: several services (or test
# processes) on one machine would fight over it, and nothing here uses it.
control_socket_disable = True
# Access lines in the service's layout (logformat.py): the path without its query
# string, so the feed socket's ?token= never reaches the log.
accesslog = "-"
# LOG_FORMAT (text or json) for gunicorn's own logs too; tokens redacted from the error
# log (a malformed request line is logged whole); health probes out of the access log.
logger_class = GunicornLogger
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Where workers mark that they accept (saathii/handover.py; the master imports none of the
# app, whose modules must be loaded after the gevent worker patches them).
HANDOVER_DIR = "SAATHII_HANDOVER_DIR"


def on_starting(server):
    """Give the workers' metrics a fresh directory (prometheus_client's multiprocess mode:
    /metrics sums what every worker wrote), and one for their handover marks. Set before
    any worker imports the app; ones inherited from the environment are ignored (and so
    never removed by on_exit)."""
    os.environ.pop(METRICS_DIR, None)
    if Config.METRICS_ENABLED:
        os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="saathii-metrics-")
    os.environ[HANDOVER_DIR] = tempfile.mkdtemp(prefix="saathii-handover-")


def child_exit(server, worker):
    """A dead worker's gauges (open sockets, relay up) stop counting; its counters stay
    in the sums, so totals never go back."""
    if os.environ.get(METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove this start's metrics and handover directories."""
    for name in (METRICS_DIR, HANDOVER_DIR):
        if os.environ.get(name):
            shutil.rmtree(os.environ[name], ignore_errors=True)


def post_worker_init(worker):
    """Start the presence sweeper in each worker (SCHEDULER_ENABLED; a lease keeps one
    sweep at a time) and its event relay, without waiting for a first request or socket:
    readiness and saathii_relay_up then say from the start whether the relay connects.
    On SIGTERM, close the feed sockets once any new workers of a reload accept. Then say
    that this worker accepts (it does right after this hook)."""
    from saathii import handover
    from saathii.realtime import KEY
    from saathii.scheduler import start_in_background

    start_in_background(worker.wsgi)
    realtime = worker.wsgi.extensions.get(KEY)  # none in bench/'s floor app
    if realtime is not None:
        realtime.listen(wait=0)
        close_sockets_on_exit(worker, realtime)
    handover.announce_ready()


def close_sockets_on_exit(worker, realtime):
    """On SIGTERM gunicorn stops accepting and lets in-flight requests finish (up to
    graceful_timeout); feed sockets never finish by themselves, so they are closed with
    1012 (service restart) then, and clients reconnect at once to a live process: at
    once when the service stops, and once the new workers accept in a reload (HUP)."""
    import signal

    import gevent

    from saathii import handover

    handle_exit = worker.handle_exit

    def close_after_handover():
        realtime.shut_down(reload=handover.wait_for_successors(gevent.sleep))

    def exit_closing_sockets(sig, frame):
        handle_exit(sig, frame)
        gevent.spawn(close_after_handover)  # not in the handler: it waits

    signal.signal(signal.SIGTERM, exit_closing_sockets)


gunicorn_errors.install()  # gunicorn's own 400s, 414s and 431s as JSON
