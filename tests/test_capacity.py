"""Feed sockets take a worker's connections only up to its capacity: past it a socket open
gets 503 before the upgrade, and REST, health checks and metrics are still answered."""
import http.client
import json
import logging
import time

import pytest

from config import reserved_connections, worker_connections
from saathii.realtime import guard as guard_module
from saathii.realtime.guard import AccountGuard
from saathii.realtime.memory import MemoryRelease

from .processes import rest
from .test_feed import upgrade_response


def test_connections_are_bounded_by_the_open_files_limit():
    assert worker_connections(None, files=20000) == 19744  # the process's own files kept
    assert worker_connections(10000, files=20000) == 10000
    assert worker_connections(50000, files=20000) == 19744  # never past EMFILE
    assert worker_connections(300, files=None) == 300
    assert worker_connections(None, files=100) == 16  # a floor, however low the limit


def test_a_quarter_of_the_connections_is_kept_from_sockets_unless_set():
    assert reserved_connections(19744) == 4936
    assert reserved_connections(20, 18) == 18
    assert reserved_connections(20, 50) == 20  # never more than there are


@pytest.fixture
def config(config):
    """Two feed sockets per worker: 20 connections, 18 kept for everything else."""
    return type("TwoSockets", (config,), {"WORKER_CONNECTIONS": 20,
                                          "FEED_RESERVED_CONNECTIONS": 18})


def refused(base, account):
    response = upgrade_response(base, f"/ws/feed?token={account.token}")
    return response.status, response.getheader("Retry-After"), json.loads(response.read())


def test_past_capacity_a_socket_gets_503_and_readiness_says_full(
        app, live_server, connect, make_user, customer, caplog):
    caplog.set_level(logging.WARNING, "saathii.realtime.hub")
    first, _ = connect(customer), connect(make_user())
    status, retry_after, body = refused(live_server, make_user())
    assert (status, body) == (503, {"detail": "Too many feed sockets on this server, "
                                              "connect again"})
    assert 1 <= int(retry_after) <= 5  # jittered, so refused clients come back spread out
    refused(live_server, customer)  # a second refusal: no second log line

    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "unavailable"
    assert ready.json["checks"]["sockets"] == "full"
    assert rest(live_server, "POST", "/both/status/heartbeat", customer) == (
        200, {"message": "Heartbeat received"})
    metrics = client.get("/metrics").text
    assert "saathii_feed_socket_capacity 2.0" in metrics
    assert 'saathii_feed_sockets_refused_total{reason="full"} 2.0' in metrics

    first.close()  # room again: readiness and opens come back, and the log says so
    hub = app.extensions["saathii_realtime"].hub
    deadline = time.monotonic() + 5
    while hub.count() > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/readyz").json["checks"]["sockets"] == "ok"
    late = connect(customer)
    assert late.hello["data"]["user_id"] == customer.id
    said = [record.getMessage() for record in caplog.records
            if record.name == "saathii.realtime.hub"]
    assert said == ["feed sockets: all 2 taken; refusing new sockets with 503 (REST and "
                    "health checks keep their reserved connections)",
                    "feed sockets: 1 of 2 held; taking new sockets again"]


def test_a_full_gunicorn_worker_still_answers_rest_and_health(web_process, make_user):
    """Sockets fill every slot the worker gives them, and no more: the next open gets 503
    and REST and health are answered (before, the sockets took every connection slot and
    everything else waited in the listen backlog)."""
    base = web_process(workers=1, relay=None, WORKER_CONNECTIONS=24,
                       FEED_RESERVED_CONNECTIONS=12)
    users = [make_user() for _ in range(24)]
    held = []
    try:
        # One socket a user, up to every slot the worker has: the 13th is refused (before,
        # the 25th open waited for a slot that never came, and timed out).
        for user in users:
            response = upgrade_response(base, f"/ws/feed?token={user.token}")
            if response.status != 101:
                break
            held.append(response)
        assert len(held) == 12
        assert (response.status, json.loads(response.read())) == (
            503, {"detail": "Too many feed sockets on this server, connect again"})
        assert rest(base, "POST", "/both/status/heartbeat", users[0]) == (
            200, {"message": "Heartbeat received"})
        connection = http.client.HTTPConnection(base, timeout=5)
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"status": "ok"})
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["checks"]["sockets"]) == (
            503, "full")
    finally:
        for response in held:
            response.close()


class RecordedGC:
    """What the memory policy asks of the collector, in order."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append(name)


def test_survivors_are_frozen_each_round_and_collected_fully_now_and_then():
    """CPython's full collections walk every object a worker's sockets keep (seconds at
    10,000 sockets): each round freezes the survivors, and a full collection runs only
    every full_every seconds (or after a large drop), over the frozen too."""
    now = [0.0]
    collector = RecordedGC()
    policy = MemoryRelease(trim=lambda _pad: None, full_every=600, collector=collector,
                           monotonic=lambda: now[0])
    for _ in range(3):
        now[0] += 30
        assert policy.after(5000) is False
    assert collector.calls == ["freeze"] * 3
    now[0] = 601
    collector.calls.clear()
    policy.after(5000)
    assert collector.calls == ["unfreeze", "collect", "freeze"]
    collector.calls.clear()
    now[0] += 30
    policy.after(5000)
    assert collector.calls == ["freeze"]  # the next full one is 600 s away again
    collector.calls.clear()
    assert policy.after(2000) is True  # a large drop: collected fully, and trimmed
    assert collector.calls == ["unfreeze", "collect", "freeze"]
    off = RecordedGC()
    assert MemoryRelease(trim=lambda _pad: None, full_every=0, collector=off).after(10) \
        is False
    assert off.calls == []  # 0: CPython's own collections alone


def test_freed_memory_is_returned_once_after_a_large_drop_of_sockets():
    trims = []
    release = MemoryRelease(trim=trims.append, full_every=0)  # this test process: no freeze
    assert release.after(5000) is False  # the peak
    assert release.after(4200) is False  # a drop under half the peak
    assert release.after(2400) is True and trims == [0]  # half gone: glibc gives it back
    assert release.after(2000) is False  # measured from the new peak: no second trim
    assert MemoryRelease(trim=trims.append, full_every=0).after(0) is False  # no peak yet
    small = MemoryRelease(trim=trims.append, full_every=0)
    small.after(800)
    assert small.after(0) is False and trims == [0]  # a drop under MIN_DROP sockets


def test_memory_rounds_run_with_account_checks_turned_off(monkeypatch):
    """FEED_ACCOUNT_CHECK_SECONDS=0 turns the account checks off, not the rounds that
    keep collection pauses short (memory.py)."""
    monkeypatch.setattr(guard_module, "MEMORY_ROUND_SECONDS", 0.01)

    class Hub:
        def count(self):
            return 0

        def users(self):
            raise AssertionError("no account check with an interval of 0")

    class Rounds:
        def __init__(self):
            self.sockets = []

        def after(self, sockets):
            self.sockets.append(sockets)

    guard = AccountGuard(None, Hub(), 0)
    guard.memory = memory = Rounds()
    rounds = memory.sockets
    guard.start()
    try:
        deadline = time.monotonic() + 5
        while len(rounds) < 3:
            assert time.monotonic() < deadline, "no memory round ran"
            time.sleep(0.01)
    finally:
        guard.stop()
        if guard.thread is not None:
            guard.thread.join(5)
    assert rounds[:3] == [0, 0, 0]
