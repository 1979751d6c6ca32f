"""The presence sweeper on APScheduler: in web processes (SCHEDULER_ENABLED) or alone in
a clock process (`python -m saathii.scheduler`). A database lease lets one run at a time."""
import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.exc import SQLAlchemyError

from .deadline import DeadlineExceeded, deadline
from .domain import lease
from .domain.sweeper import sweep
from .errors import APIError
from .extensions import db

log = logging.getLogger(__name__)

LEASE_NAME = "presence-sweeper"
KEY = "saathii_scheduler"


class Sweeper:
    """Runs a sweep when this process holds the sweeper lease."""

    def __init__(self, app):
        self.app = app
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        interval = app.config["SWEEP_INTERVAL_SECONDS"]
        # Long enough to outlive a missed beat, short enough to hand over quickly.
        self.lease_seconds = max(3 * interval, 5)

    def run(self):
        """One scheduled run: sweep if the lease is ours; return the result or None. A
        sweep that a stalled database holds past its lease is given up (gevent)."""
        with self.app.app_context():
            try:
                with deadline(self.lease_seconds, "sweep"):
                    if not lease.acquire(LEASE_NAME, self.holder, self.lease_seconds):
                        return None
                    return sweep()
            except (SQLAlchemyError, DeadlineExceeded, APIError):  # APIError: outcome unknown
                db.session.rollback()
                log.exception("sweep failed; the next run will try again")
                return None
            finally:
                db.session.remove()

    def add_to(self, scheduler):
        scheduler.add_job(self.run, "interval", id="presence-sweep",
                          seconds=self.app.config["SWEEP_INTERVAL_SECONDS"],
                          next_run_time=datetime.now(timezone.utc),
                          max_instances=1, coalesce=True)


_start_lock = threading.Lock()


def start_in_background(app):
    """Start this process's background scheduler once, if SCHEDULER_ENABLED."""
    if not app.config.get("SCHEDULER_ENABLED") or KEY in app.extensions:
        return
    with _start_lock:
        if KEY in app.extensions:
            return
        scheduler = BackgroundScheduler(timezone=timezone.utc, daemon=True)
        Sweeper(app).add_to(scheduler)
        scheduler.start()
        app.extensions[KEY] = scheduler
        log.info("presence sweeper scheduled every %ss in process %s",
                 app.config["SWEEP_INTERVAL_SECONDS"], os.getpid())


def init_app(app):
    """Web processes start the scheduler with their first request (never in CLI commands
    or in the reloader's watcher process, which serve none); gunicorn starts it earlier."""
    if app.config["SCHEDULER_ENABLED"]:
        app.before_request(lambda: start_in_background(app))


def main():
    """The clock process: the sweeper alone, in the foreground."""
    from . import create_app

    app = create_app()
    if app.config["EVENT_RELAY"] == "none":
        raise SystemExit(
            "the clock process needs an event relay, or its sweeps' offline events reach no "
            "feed socket: set REDIS_URL, or use PostgreSQL (DATABASE_URL); on SQLite alone, "
            "let the web process sweep (SCHEDULER_ENABLED=true) instead")
    scheduler = BlockingScheduler(timezone=timezone.utc)
    Sweeper(app).add_to(scheduler)
    log.info("clock process: sweeping every %ss", app.config["SWEEP_INTERVAL_SECONDS"])
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
