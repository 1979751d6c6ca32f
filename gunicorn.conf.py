"""gunicorn settings for the Procfile's web process, read from the environment.

gevent workers hold each idle feed socket as a greenlet rather than an OS thread.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
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
    sweep at a time) without waiting for a first request."""
    from saathii.scheduler import start_in_background

    start_in_background(worker.wsgi)
