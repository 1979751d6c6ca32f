"""Soak: hundreds of sockets, heartbeats and favorite churn across two gunicorn processes
on Redis, for SOAK_SECONDS (default 120). Every favorite event reaches each socket of its
listener exactly once; descriptors, threads and memory end flat; the logs stay clean."""
import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from .processes import rest
from .sockets import FeedClient

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
LISTENERS, CUSTOMERS, CHURNERS = 40, 200, 12


def worker_pids(masters):
    """The worker processes of these gunicorn masters."""
    pids = []
    for master in masters:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        pids += [int(pid) for pid in children]
    return sorted(pids)


def database_sockets(pid, port):
    """The inodes of a process's TCP connections to a port (its database pool's)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def resources(pid, database_port):
    """Descriptors (other than the database pool's connections), the pool's connections,
    threads and resident memory of a worker."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    pool = database_sockets(pid, database_port)
    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    in_pool = sum(1 for link in links if link.startswith("socket:[")
                  and link[len("socket:["):-1] in pool)
    return {"fds": len(links) - in_pool, "pooled": in_pool,
            "threads": int(fields["Threads"]),
            "rss_kib": int(fields["VmRSS"].split()[0])}


class Collector:
    """A socket whose messages a thread keeps reading."""

    def __init__(self, server, account):
        self.client = FeedClient(server, account.token)
        self.account = account
        self.messages = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                raw = self.client.ws.receive(timeout=1)
            except Exception:  # noqa: BLE001 - closed at the end of the test
                return
            if raw is not None:
                self.messages.append(json.loads(raw))

    def favorite_events(self):
        return [m for m in self.messages if m["type"].startswith("favorite_")]


@pytest.mark.soak
def test_soak(config, web_process, make_user, tmp_path):
    if not config.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
        pytest.skip("the soak runs on PostgreSQL")
    listeners = [make_user(f"listener_{n}", "listener") for n in range(LISTENERS)]
    customers = [make_user(f"customer_{n}", "customer") for n in range(CUSTOMERS)]
    servers = [web_process(), web_process()]
    sockets = [Collector(servers[n % 2], account) for n, account in enumerate(customers)]
    listener_sockets = {account.id: [Collector(server, account) for server in servers]
                        for account in listeners}
    everything = sockets + [s for pair in listener_sockets.values() for s in pair]
    for socket in everything:
        deadline = time.monotonic() + 20
        while not socket.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket.messages[0]["type"] == "connection_established"
    expected, lock, failures = Counter(), threading.Lock(), []

    def churn(index, until):
        rng = random.Random(index)
        while time.monotonic() < until:
            who = rng.choice(customers + listeners)
            server = rng.choice(servers)
            if rng.random() < 0.3:
                status, body = rest(server, "POST", "/both/status/heartbeat", who)
            else:
                target = rng.choice(listeners)
                if target.id == who.id:
                    continue
                adding = rng.random() < 0.55
                status, body = rest(server, "POST" if adding else "DELETE",
                                    "/favorites/add" if adding else "/favorites/remove",
                                    who, {"listener_id": target.id})
                if status == 200 and body["message"].startswith("Successfully"):
                    kind = "favorite_added" if adding else "favorite_removed"
                    with lock:
                        expected[(target.id, who.id, kind)] += 1
            if status != 200:
                failures.append((status, body))

    def run(seconds):
        until = time.monotonic() + seconds
        with ThreadPoolExecutor(max_workers=CHURNERS) as pool:
            list(pool.map(lambda i: churn(i, until), range(CHURNERS)))

    run(min(15.0, SOAK_SECONDS / 4))  # warm-up: pools, caches, greenlets settle
    time.sleep(3)  # as before `after`: the warm-up's last connections closed
    pids = worker_pids(web_process.masters)
    assert len(pids) == 2
    port = make_url(config.SQLALCHEMY_DATABASE_URI).port or 5432
    before = {pid: resources(pid, port) for pid in pids}
    run(SOAK_SECONDS)
    time.sleep(3)  # the last events in flight arrive
    after = {pid: resources(pid, port) for pid in pids}
    assert failures == []
    for listener_id, pair in listener_sockets.items():
        wanted = Counter({key: n for key, n in expected.items() if key[0] == listener_id})
        for socket in pair:
            events = socket.favorite_events()
            ids = [e["id"] for e in events]
            assert len(ids) == len(set(ids)), "an event arrived twice"
            got = Counter((listener_id, e["data"]["user_id"], e["type"]) for e in events)
            assert got == wanted
    for socket in sockets:  # favorite events go to the listener concerned, nobody else
        assert socket.favorite_events() == []
    for pid in pids:
        assert abs(after[pid]["fds"] - before[pid]["fds"]) <= 5, (before, after)
        # The pool may grow as the load's peaks do (sockets catching up read the store),
        # never past its size: that is a bound, not a leak.
        pool = config.SQLALCHEMY_ENGINE_OPTIONS
        assert after[pid]["pooled"] <= pool["pool_size"] + pool["max_overflow"], after
        assert after[pid]["threads"] <= before[pid]["threads"] + 2, (before, after)
        assert after[pid]["rss_kib"] - before[pid]["rss_kib"] < 30 * 1024, (before, after)
    for socket in everything:
        socket.client.close()
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert "Traceback" not in logs and "ERROR" not in logs
    assert sum(expected.values()) > 100  # the soak did churn
