"""The outcome of a COMMIT cut short (a deadline, a lost connection), asked of PostgreSQL.

A writer whose COMMIT is interrupted cannot tell whether it happened: answering 503 for a
change that is saved misleads the client, and its events would never be published.
PostgreSQL keeps every transaction's status, so with the transaction's id (read with its
first statement) another connection asks pg_xact_status. A transaction still "in
progress" is one whose COMMIT the server has not processed (a stalled network holds it,
or the answer is on its way): its backend is terminated, which ends it one way or the
other, and the status is read again. Cost: the transaction id is read with a statement
the batched writers send anyway (the sweeper: one more), which assigns it at once; one
short connection, bounded by SETTLE_SECONDS, when a COMMIT is cut.
"""
import logging
import time

import sqlalchemy as sa

from .deadline import DeadlineExceeded, deadline

log = logging.getLogger(__name__)

SETTLE_SECONDS = 3
POLL_SECONDS = 0.05
# The first statement of a batched writer's transaction on PostgreSQL: its lock wait
# (the session's own when :wait is NULL) and who it is.
BEGIN = sa.text("SELECT CASE WHEN CAST(:wait AS text) IS NULL THEN NULL "
                "ELSE set_config('lock_timeout', CAST(:wait AS text), true) END, "
                "CAST(pg_current_xact_id() AS text), pg_backend_pid()")
STATUS = sa.text("SELECT pg_xact_status(CAST(:xid AS xid8))")
# Only while that backend still runs this transaction (a pid is reused once it ends).
TERMINATE = sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = :pid AND CAST(backend_xid AS text) = "
                    "CAST(CAST(:xid AS bigint) % 4294967296 AS text)")


def begin(connection, lock_wait_ms=None):
    """Start a transaction's work on PostgreSQL: set its lock wait (milliseconds, if
    given) and return (transaction id, backend pid) for settle()."""
    _, xid, pid = connection.execute(
        BEGIN, {"wait": None if lock_wait_ms is None else str(int(lock_wait_ms))}).one()
    return xid, pid


def settle(engine, xid, pid):
    """"committed" or "aborted", or None when it cannot be known within SETTLE_SECONDS
    (the database does not answer)."""
    seconds = SETTLE_SECONDS
    give_up = time.monotonic() + seconds
    try:
        with deadline(seconds, "settling a commit"), \
                engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            terminated = False
            while True:
                status = connection.execute(STATUS, {"xid": xid}).scalar()
                if status in ("committed", "aborted"):
                    return status
                if status is None or time.monotonic() > give_up:
                    return None  # too old to know (it cannot be, moments later), or no answer
                if not terminated:  # its COMMIT has not been processed: end it
                    connection.execute(TERMINATE, {"pid": pid, "xid": xid})
                    terminated = True
                time.sleep(POLL_SECONDS)
    except (DeadlineExceeded, sa.exc.SQLAlchemyError) as err:
        log.warning("the outcome of transaction %s could not be read (%s)", xid,
                    err.__class__.__name__)
        return None
