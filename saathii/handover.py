"""Zero-downtime reloads: on gunicorn's HUP, old workers close their feed sockets (1012)
only once the new workers accept.

gunicorn forks the new workers, then sends SIGTERM to the old ones at once, while the new
ones are still loading the app (a second or more). Sockets closed then would reconnect to
nobody: their clients wait in the listen backlog or retry. So each worker, once its app
is loaded, leaves a mark in a directory the master made (SAATHII_HANDOVER_DIR); a worker
told to stop closes its sockets as soon as every sibling forked after it was ready (a
reload's new workers) has left its mark (or died), at most HANDOVER_WAIT_SECONDS later;
with none (the whole service stops) it closes them at once. Linux only (/proc):
elsewhere, at once. Cost: one small file a worker.
"""
import logging
import os
import time

DIRECTORY = "SAATHII_HANDOVER_DIR"  # made and removed by gunicorn.conf.py's master hooks
HANDOVER_WAIT_SECONDS = 10  # half gunicorn.conf.py's graceful_timeout
POLL_SECONDS = 0.05

log = logging.getLogger(__name__)
_ready_at = [None]  # when this worker was ready, in clock ticks since boot


def announce_ready():
    """In a worker whose app is loaded and that is about to accept: leave its mark."""
    _ready_at[0] = _ticks_now()
    directory = os.environ.get(DIRECTORY)
    if directory and os.path.isdir(directory):
        with open(os.path.join(directory, str(os.getpid())), "w"):
            pass
        log.info("worker %d ready to accept", os.getpid())


def _ticks_now():
    """Clock ticks since boot (the unit of a process's start time in /proc), or None."""
    try:
        with open("/proc/uptime") as uptime:
            return int(float(uptime.read().split()[0]) * os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return None


def _started(pid):
    """A process's start time (clock ticks since boot), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def younger_siblings():
    """The master's other workers forked after this one was ready: a reload's new workers
    (not the workers of the same start, forked together while each loads the app)."""
    master, me, ready = os.getppid(), os.getpid(), _ready_at[0]
    if ready is None:
        return []
    try:
        with open(f"/proc/{master}/task/{master}/children") as children:
            pids = [int(pid) for pid in children.read().split() if int(pid) != me]
    except OSError:
        return []
    return [pid for pid in pids if (_started(pid) or 0) > ready]


def wait_for_successors(sleep=time.sleep, timeout=HANDOVER_WAIT_SECONDS):
    """Wait until every younger sibling has left its mark or died (at most `timeout`);
    return whether there were any (a reload: new workers take the sockets at once)."""
    directory = os.environ.get(DIRECTORY)
    successors = younger_siblings() if directory else []
    waited_for = len(successors)
    deadline = time.monotonic() + timeout
    while successors and time.monotonic() < deadline:
        successors = [pid for pid in successors if _started(pid) is not None
                      and not os.path.exists(os.path.join(directory, str(pid)))]
        if successors:
            sleep(POLL_SECONDS)
    if successors:
        log.warning("handover: %d new workers not ready after %d s; closing feed sockets "
                    "anyway", len(successors), timeout)
    elif waited_for:
        log.info("handover: the new workers accept; closing feed sockets")
    return bool(waited_for)
