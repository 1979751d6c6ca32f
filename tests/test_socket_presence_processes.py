"""Presence that follows the feed socket across workers: gunicorn with the Procfile's
settings, one worker on SQLite, two on PostgreSQL with each relay; real time, short
settings (the grace, the lease and the sweep interval)."""
import os
import signal
import time

import pytest

from .processes import rest
from .sockets import FeedClient
from .workers import serving_pid, worker_pids

GRACE = 2
LEASE = 2
SWEEP = 1
SETTINGS = {"PRESENCE_FROM_SOCKETS": "true", "OFFLINE_GRACE_SECONDS": GRACE,
            "SOCKET_LEASE_SECONDS": LEASE, "SWEEP_INTERVAL_SECONDS": SWEEP,
            # No sweeper: the workers themselves find a dead one (and nothing lapses).
            "SCHEDULER_ENABLED": "false", "SOCKET_PRESENCE_TICK_SECONDS": 0.2}


@pytest.fixture(params=["redis", "postgresql"])
def served(request, web_process, database_uri):
    """(base URL, gunicorn master pid, worker count): one worker on SQLite (once), two on
    PostgreSQL with each relay."""
    if database_uri.startswith("sqlite"):
        if request.param != "redis":
            pytest.skip("one worker on SQLite, no relay: run once")
        base = web_process(workers=1, relay=None, **SETTINGS)
        return base, web_process.masters[-1], 1
    relay = "redis" if request.param == "redis" else None
    base = web_process(workers=2, relay=relay, **SETTINGS)
    return base, web_process.masters[-1], 2


def open_feed(base, account):
    client = FeedClient(base, account.token)
    assert client.receive(timeout=10)["type"] == "connection_established"
    return client


def worker_of(client, master, workers):
    return serving_pid(client.ws.sock, worker_pids(master, workers))


def open_on(base, account, master, workers, pid=None, avoid=None):
    """A socket of the account served by worker `pid` (or by any worker but `avoid`)."""
    for _ in range(60):
        client = open_feed(base, account)
        served_by = worker_of(client, master, workers)
        if (pid is None or served_by == pid) and (avoid is None or served_by != avoid):
            return client, served_by
        client.close()
    raise AssertionError("no socket landed on the worker wanted")


def presence(base, caller, account):
    status, body = rest(base, "GET", f"/users/{account.id}/presence", caller)
    assert status == 200, body
    return body


def wait_for(check, seconds):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.1)


def fan_of(base, customer, listener):
    status, body = rest(base, "POST", "/favorites/add", customer,
                        {"listener_id": listener.id})
    assert status == 200, body
    return open_feed(base, customer)


def test_offline_follows_the_last_socket_after_the_grace(served, customer, listener):
    base, _, _ = served
    fan = fan_of(base, customer, listener)
    try:
        socket = open_feed(base, listener)
        online = fan.receive(timeout=10)
        assert (online["type"], online["data"]["user_id"]) == ("listener_online", listener.id)
        assert presence(base, customer, listener)["is_online"] is True
        time.sleep(GRACE + 1)  # held: no heartbeat needed
        assert presence(base, customer, listener)["is_online"] is True
        closed_at = time.monotonic()
        socket.close()
        offline = fan.receive(timeout=GRACE + 10)
        assert (offline["type"], offline["data"]["user_id"]) == ("listener_offline", listener.id)
        assert time.monotonic() - closed_at >= GRACE - 0.2  # not before the grace
        assert presence(base, customer, listener)["is_online"] is False
        time.sleep(1)
        fan.expect_nothing_queued()  # once
    finally:
        fan.close()


def test_a_reconnect_within_the_grace_on_the_other_worker_sends_nothing(
        served, customer, listener):
    base, master, workers = served
    fan = fan_of(base, customer, listener)
    try:
        first, pid = open_on(base, listener, master, workers)
        assert fan.receive(timeout=10)["type"] == "listener_online"
        first.close()
        # Back within the grace, on the other worker (the same one when there is one).
        again, _ = open_on(base, listener, master, workers,
                           avoid=pid if workers > 1 else None)
        time.sleep(GRACE + 2)
        assert presence(base, customer, listener)["is_online"] is True
        fan.expect_nothing_queued()  # no offline, no online
        again.close()
    finally:
        fan.close()


@pytest.fixture
def two_workers(database_uri):
    """Skips on SQLite (one worker) before any server starts."""
    if database_uri.startswith("sqlite"):
        pytest.skip("two workers: PostgreSQL")


def test_two_sockets_on_two_workers_one_closes_still_online(two_workers, served, customer,
                                                            listener):
    base, master, workers = served
    fan = fan_of(base, customer, listener)
    try:
        first, pid = open_on(base, listener, master, workers)
        second, _ = open_on(base, listener, master, workers, avoid=pid)
        assert fan.receive(timeout=10)["type"] == "listener_online"
        time.sleep(0.5)  # the second worker has held its user (a tick)
        second.close()
        time.sleep(GRACE + 2)
        assert presence(base, customer, listener)["is_online"] is True
        fan.expect_nothing_queued()
        first.close()
        offline = fan.receive(timeout=GRACE + 8)
        assert offline["type"] == "listener_offline"
    finally:
        fan.close()


def test_a_killed_worker_loses_its_users_within_the_lease(
        served, customer, listener):
    """Documented bound: SOCKET_LEASE_SECONDS and a third of it: each live worker (here
    the other one, or the one gunicorn starts in its place) looks for run-out leases as
    it renews its own; no sweeper runs here."""
    base, master, workers = served
    socket, pid = open_on(base, listener, master, workers)
    assert presence(base, customer, listener)["is_online"] is True
    time.sleep(0.5)  # held (a tick)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not presence(base, customer, listener)["is_online"], 20)
    socket.close()
