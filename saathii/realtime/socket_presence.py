"""Presence that follows the feed socket, in this process (PRESENCE_FROM_SOCKETS).

While a user holds a feed socket here they stay online without REST heartbeats: every
SOCKET_PRESENCE_REFRESH_SECONDS one statement per thousand users marks the online ones
among them seen (it never brings anyone online: a user who went offline stays so until
they beat, change their status or open a socket; an opening socket beats). When their
last socket here closes they go offline OFFLINE_GRACE_SECONDS later, unless they came
back or hold a socket elsewhere (domain/held_sockets.py). One thread a process, waking
every tick: the lease (and other processes' run-out leases), then departures due, then
arrivals, then the refresh when due.
"""
import logging
import os
import socket
import threading
import uuid
from datetime import timedelta

import sqlalchemy as sa

from ..clock import clock
from ..deadline import DeadlineExceeded, deadline
from ..domain import beats, held_sockets
from ..errors import APIError
from ..extensions import db

log = logging.getLogger(__name__)

CHUNK = 1000


class SocketPresence:
    """Keeps the users holding sockets here online, and takes them offline once gone."""

    def __init__(self, app, hub):
        config = app.config
        self.app = app
        self.hub = hub
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.grace = timedelta(seconds=config["OFFLINE_GRACE_SECONDS"])
        self.refresh_every = timedelta(seconds=config["SOCKET_PRESENCE_REFRESH_SECONDS"])
        self.lease_seconds = config["SOCKET_LEASE_SECONDS"]
        self.tick_seconds = config["SOCKET_PRESENCE_TICK_SECONDS"]
        self.lock = threading.Lock()  # arrivals and departures
        self.ticking = threading.Lock()  # one tick at a time (the thread's or a test's)
        self.arrivals = set()  # users whose first socket here opened since the last tick
        self.departures = {}  # user id -> when their last socket here closed
        self.next_renewal = self.next_refresh = None
        self.expires_at = None  # when our lease runs out (None: a first one is new, not lost)
        self.owed_since = None  # a lost lease's users taken offline since then: bring back
        self.stopping = threading.Event()
        self.handed_over = False
        self.thread = None

    def arrived(self, user_id):
        """A user's first socket here opened (called by the hub)."""
        with self.lock:
            self.arrivals.add(user_id)
            self.departures.pop(user_id, None)  # back within the grace: no offline

    def departed(self, user_id):
        """A user's last socket here closed (called by the hub)."""
        with self.lock:
            if self.handed_over:  # stopping: the lease hands them over (hand_over)
                return
            self.departures[user_id] = clock.now()
            self.arrivals.discard(user_id)

    def start(self):
        """Start the thread once (a tick of 0: none; tests tick by hand)."""
        with self.lock:
            if self.thread is None and self.tick_seconds > 0:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="saathii-socket-presence")
                self.thread.start()

    def stop(self):
        self.stopping.set()

    def _run(self):
        while not self.stopping.wait(self.tick_seconds):
            try:
                self.tick()
            except (sa.exc.SQLAlchemyError, DeadlineExceeded, APIError) as err:
                log.warning("socket presence: this round failed (%s); the next one tries "
                            "again", err.__class__.__name__)
            except Exception:  # noqa: BLE001 - the thread must outlive any one round
                log.exception("socket presence: this round failed; the next one tries again")

    def tick(self, now=None):
        """One round: renew the lease when due (bringing back the users a lost one
        owes), take offline the users gone for the grace, hold the users who arrived,
        refresh last_seen when due."""
        with self.ticking, self.app.app_context():
            now = now or clock.now()
            try:
                with deadline(max(self.lease_seconds / 2, 1), "socket presence"):
                    self._renew(now)
                    self._bring_back()
                    self._release(now)
                    self._hold()
                    self._refresh(now)
            finally:
                db.session.remove()

    def _renew(self, now):
        if self.handed_over or (self.next_renewal and now < self.next_renewal):
            return
        lost = held_sockets.renew(self.process, now, self.lease_seconds)
        if lost and self.expires_at is not None:
            # Run out: a sweep may have taken our users offline and their rows away.
            # Hold them again, and bring back those taken offline once it had run out:
            # their sockets are open. (One who went offline themselves while it held
            # stays so; one who did after it comes back: the price of a lease lost.)
            users = self.hub.users()  # not under self.lock: the hub calls in holding its own
            with self.lock:
                self.arrivals.update(users)
            if users:
                log.warning("socket presence: this process's lease had run out; holding "
                            "its %d users again", len(users))
            if self.owed_since is None:  # else an earlier loss is still owed, from then
                self.owed_since = self.expires_at
        self.expires_at = now + timedelta(seconds=self.lease_seconds)
        self.next_renewal = now + timedelta(seconds=self.lease_seconds / 3)
        # A process that died is found by every live one, not only by the sweeper (whose
        # own lease may have died with it): its users go within a third of a lease.
        gone = held_sockets.take_orphans_offline(now)
        if gone:
            log.info("socket presence: %d users of a process that died taken offline", gone)

    def _bring_back(self):
        """Bring back online the users a lost lease still owes (each round until done;
        a failure leaves the round's other work to go on)."""
        if self.owed_since is None:
            return
        try:
            beats.bring_back(self.hub.users(), self.owed_since)
            self.owed_since = None
        except (sa.exc.SQLAlchemyError, DeadlineExceeded, APIError) as err:
            log.warning("socket presence: could not bring this process's users back "
                        "online (%s); the next round tries again", err.__class__.__name__)

    def _release(self, now):
        with self.lock:
            due = {user_id: left for user_id, left in self.departures.items()
                   if left + self.grace <= now}
            for user_id in due:
                del self.departures[user_id]
        for user_id in self.hub.holding(due):  # back here (arrived() saw to it, mostly)
            del due[user_id]
        if not due:
            return
        try:
            gone = held_sockets.release(self.process, due, now)
        except BaseException:
            with self.lock:  # tried again next round
                for user_id, left in due.items():
                    self.departures.setdefault(user_id, left)
            raise
        if gone:
            log.info("socket presence: %d users offline after their last socket closed",
                     gone)

    def _hold(self):
        with self.lock:
            arrivals, self.arrivals = self.arrivals, set()
        if not arrivals:
            return
        try:
            held_sockets.hold(self.process, arrivals)
        except BaseException:
            with self.lock:
                self.arrivals.update(arrivals)
            raise

    def _refresh(self, now):
        if self.next_refresh and now < self.next_refresh:
            return
        users = self.hub.users()  # after `now`: a user who leaves later was seen before
        for start in range(0, len(users), CHUNK):
            beats.keep_online(users[start:start + CHUNK], now)
        self.next_refresh = now + self.refresh_every

    def stop_noting(self):
        """The process is stopping: the closes that follow are not departures (see
        hand_over)."""
        with self.lock:
            self.handed_over = True
            self.departures.clear()
        self.stopping.set()

    def hand_over(self, reconnect_within):
        """The process has closed its sockets to stop: its users are not taken offline by
        it but by the sweeper, once its lease runs out (reconnect_within seconds plus the
        grace from now), those who have not come back (a socket opened anywhere beats)."""
        self.stop_noting()
        with self.ticking, self.app.app_context():
            now = clock.now()
            try:
                with deadline(max(self.lease_seconds / 2, 1), "socket presence hand-over"):
                    self._hold()  # those who came in since the last tick are handed over too
                    held_sockets.renew(self.process, now, reconnect_within
                                       + self.grace.total_seconds(), stopping=True)
            except (sa.exc.SQLAlchemyError, DeadlineExceeded) as err:
                log.warning("socket presence: could not hand over (%s); the lease runs out "
                            "as it was", err.__class__.__name__)
            finally:
                db.session.remove()
