"""Health for load balancers and orchestrators: /healthz (the process serves) and /readyz
(its database answers, its event relay is connected and it takes feed sockets). No token,
no rate limit, at most one trivial query, and kept out of the access log unless a probe
fails."""
import logging
import threading
import time

import sqlalchemy as sa
from flask import Blueprint

from ..extensions import db
from ..realtime import realtime

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)
CHECK_TIMEOUT_SECONDS = 2
# A relay not started yet (no feed socket has opened here) is started, and given this long.
RELAY_START_SECONDS = 1
SELECT_ONE = sa.text("SELECT 1")


class DatabaseCheck:
    """SELECT 1, one at a time per process: probes that come while one runs wait for it,
    each at most until its deadline. A stalled database answers "timeout" in bounded time
    and holds one connection, however many probes come."""

    def __init__(self):
        self.lock = threading.Lock()
        self.run = None  # (deadline, done event, result holder) of the check in flight

    def __call__(self, engine, timeout=CHECK_TIMEOUT_SECONDS):
        with self.lock:
            if self.run is None or self.run[1].is_set():
                self.run = (time.monotonic() + timeout, threading.Event(), [])
                threading.Thread(target=self._select, args=(engine, *self.run[1:]),
                                 name="saathii-readyz", daemon=True).start()
            deadline, done, result = self.run
        if not done.wait(max(0.0, deadline - time.monotonic())):
            return "timeout"
        return result[0]

    @staticmethod
    def _select(engine, done, result):
        try:
            # Autocommit: the SELECT is the only round trip (no BEGIN, no ROLLBACK).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(SELECT_ONE)
            result.append("ok")
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            result.append("down")
            log.warning("readiness: the database check failed (%s)", err.__class__.__name__)
        finally:
            done.set()


check_database = DatabaseCheck()


@bp.get("/healthz")
def healthz():
    """The process serves: nothing else is checked."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """200 when the database answers, the event relay in use is connected and feed
    sockets are taken, else 503 naming what failed (a router sends new clients to another
    process while this one is full; it still answers REST)."""
    checks = {"database": check_database(db.engine)}
    relay = realtime().relay_connected(RELAY_START_SECONDS)
    if relay is not None:  # none in use (one process on SQLite): nothing to check
        checks["relay"] = "ok" if relay else "down"
    checks["sockets"] = "full" if realtime().hub.full else "ok"
    if all(state == "ok" for state in checks.values()):
        return {"status": "ok", "checks": checks}
    log.warning("not ready: %s", ", ".join(f"{name} {state}" for name, state in checks.items()))
    return {"status": "unavailable", "checks": checks}, 503
