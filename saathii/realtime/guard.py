"""Closes the feed sockets of accounts that are gone (and, every MEMORY_ROUND_SECONDS,
keeps the worker's collection pauses short and returns freed memory: memory.py).

A socket is authenticated once, at its upgrade; an account deactivated (or deleted)
later would keep hearing events. Every `interval` seconds (0: never) one thread per
process asks the database which of the users holding sockets here are no longer active,
in one query per thousand users, and closes their sockets (1008). A token's expiry needs
no query: each socket's writer closes it then (hub.Connection). The memory rounds run
whatever the interval: turning the account checks off must not bring back the long
collection pauses.
"""
import logging
import threading
import time

import sqlalchemy as sa

from ..deadline import DeadlineExceeded, deadline
from ..extensions import db
from ..models import User
from ..sql import in_ids, built_once, fetch_rows
from .memory import MemoryRelease

log = logging.getLogger(__name__)

CHUNK = 1000
# The memory round's period: survivors frozen within seconds, so that a full collection
# never has many to walk (memory.py).
MEMORY_ROUND_SECONDS = 5


@built_once
def _active_among():
    return sa.select(User.id).where(in_ids(User.id, "ids"), User.is_active == sa.true())


def inactive_among(user_ids):
    """The ids among user_ids that belong to no active user."""
    active = set()
    for start in range(0, len(user_ids), CHUNK):
        chunk = user_ids[start:start + CHUNK]
        active.update(row[0] for row in fetch_rows(_active_among(), {"ids": chunk}))
    return [user_id for user_id in user_ids if user_id not in active]


class AccountGuard:
    """A thread that closes the sockets of deactivated accounts, every `interval` s."""

    def __init__(self, app, hub, interval, full_collect_every=600):
        self.app = app
        self.hub = hub
        self.interval = interval
        self.stopping = threading.Event()
        self.thread = None
        self.lock = threading.Lock()
        self.memory = MemoryRelease(full_every=full_collect_every)

    def start(self):
        """Start the thread once."""
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="saathii-account-guard",
                                               daemon=True)
                self.thread.start()

    def stop(self):
        self.stopping.set()

    def check(self):
        """Close the sockets of the users here whose accounts are gone; return their ids."""
        user_ids = self.hub.users()
        if not user_ids:
            return []
        with self.app.app_context():
            try:
                with deadline(self.interval, "account check"):  # a stalled database
                    gone = inactive_among(user_ids)
            finally:
                db.session.remove()
        for user_id in gone:
            self.hub.close_user(user_id, 1008, "Account deactivated")
        return gone

    def _run(self):
        checks = self.interval > 0
        step = min(self.interval, MEMORY_ROUND_SECONDS) if checks else MEMORY_ROUND_SECONDS
        next_check = time.monotonic() + self.interval
        while not self.stopping.wait(step):
            self.memory.after(self.hub.count())  # freezes survivors; after a surge, trims
            if not checks or time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + self.interval
            try:
                self.check()
            except (sa.exc.SQLAlchemyError, DeadlineExceeded) as err:  # the next round tries
                log.warning("could not check the feed sockets' accounts (%s)",
                            err.__class__.__name__)
