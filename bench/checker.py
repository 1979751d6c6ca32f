"""Every screen converges to the truth: the feed's guarantees checked together, under faults.

    python bench/checker.py [--seconds 20] [--relay postgresql,redis] [--database-url URL]
    python bench/checker.py --database-url sqlite:////tmp/checker.db   # one worker

For each relay, starts the Procfile's web (2 workers) and clock processes on its own
database (Redis, when it is the relay, behind a TCP proxy the checker controls; on
SQLite, one web process with one worker that sweeps itself, and no relay), then for
--seconds: every listener's status changes through both workers at the same moments
(two writers each), churning customers add and remove favorites, every listener's feed
socket drops and reconnects with `since`, watching customers hold sockets (and read REST
after each connect, as docs/api.md asks); halfway a web worker is killed with SIGKILL;
at the end the relay pauses (Redis: the proxy holds every byte for a few seconds;
PostgreSQL: the listening backends are terminated) and the load stops during the pause,
so its last changes reach other processes' sockets only by what a process does once its
relay is back. Then it checks, prints one JSON line, and exits 1 on any failure:
- every watching customer's view of each favorite equals REST (its state, at a version
  no newer: heartbeats, socket opens among them, move versions and send nothing);
- every listener got each stored favorite event after its first cursor once: none
  missing, none twice;
- every acknowledged change is in the database (favorites as last acknowledged, status
  versions at least the highest acknowledged).
Only 127.0.0.1 is contacted.
"""
import argparse
import collections
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import sqlalchemy as sa
from simple_websocket import Client, ConnectionClosed

from common import (DEFAULT_DATABASE_URL, ROOT, create_database, libpq_url, log, migrate,
                    reset_schema, token, with_database)
from server import Server

sys.path.insert(0, ROOT)
from tests.proxy import TcpProxy  # noqa: E402 - the tests' proxy, from the repository root

LISTENERS = 8
WATCHERS = 8  # customers holding a socket, each with every listener in favorites
CHURNERS = 4  # customers adding and removing favorites, each on its own listeners
PAUSE_SECONDS = 4
SETTLE_SECONDS = 20  # the longest the checker waits for views to converge
FIRST_ID = 1000
REFUSALS = {}  # socket opens that failed, by error
ACKNOWLEDGED = []  # a user id per status change answered 200
STARTED = time.monotonic()  # times in a failure's history count from here


class Account:
    def __init__(self, user_id):
        self.id = user_id
        self.token = token(user_id)


def call(port, method, path, account, body=None):
    """(status, JSON body) of one request on a fresh connection (either worker);
    (None, None) when the connection failed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"Authorization": f"Bearer {account.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    except (OSError, ValueError):
        return None, None
    finally:
        connection.close()


def open_socket(port, account, since=None, attempts=50):
    """A feed socket and its greeting; retried while the server refuses (a worker
    killed, a restart)."""
    query = f"?token={account.token}" + (f"&since={since}" if since is not None else "")
    for _ in range(attempts):
        try:
            ws = Client.connect(f"ws://127.0.0.1:{port}/ws/feed{query}")
            raw = ws.receive(timeout=10)
            if raw is not None:
                greeting = json.loads(raw)
                if greeting["type"] == "connection_established":
                    return ws, greeting["data"]
            close(ws)
        except Exception as err:  # noqa: BLE001 - refused, reset, a bad answer: again
            REFUSALS[err.__class__.__name__] = REFUSALS.get(err.__class__.__name__, 0) + 1
        time.sleep(0.2)
    raise RuntimeError(f"no feed socket for user {account.id}")


def close(ws):
    try:
        ws.close()
    except (OSError, ConnectionClosed):
        pass  # closed by the server already (a restart, a killed worker)


class ListenerFeed(threading.Thread):
    """A listener's socket that drops and reconnects with `since`; records the stored
    event ids received."""

    def __init__(self, port, account, stop):
        super().__init__(daemon=True)
        self.port, self.account, self.stop = port, account, stop
        self.first_cursor = None
        self.received = []  # ids, in arrival order, over every connection
        self.resets = 0
        self.connections = 0

    def run(self):
        since = None
        while True:
            ws, greeting = open_socket(self.port, self.account, since)
            self.connections += 1
            if since is None:
                since = self.first_cursor = greeting["last_event_id"] or 0
            if greeting.get("cursor_reset"):
                self.resets += 1
            until = time.monotonic() + random.uniform(0.5, 2.5)
            try:
                while not self.stop.is_set() or time.monotonic() < self.stop.drain_until:
                    if not self.stop.is_set() and time.monotonic() > until:
                        break  # drop, and come back with since
                    raw = ws.receive(timeout=0.2)
                    if raw is None:
                        continue
                    message = json.loads(raw)
                    if "id" in message:
                        self.received.append(message["id"])
                        since = message["id"]
            except ConnectionClosed:
                pass
            finally:
                close(ws)
            if self.stop.is_set() and time.monotonic() >= self.stop.drain_until:
                return


class Watcher(threading.Thread):
    """A customer's socket and its view of each listener's presence: REST read after
    each connect, merged with the socket's events by version."""

    def __init__(self, port, account, listener_ids, stop):
        super().__init__(daemon=True)
        self.port, self.account, self.listener_ids, self.stop = port, account, listener_ids, stop
        self.view = {}
        self.lock = threading.Lock()
        self.older_after_newer = 0  # a version lower than one the socket sent before

    def keep(self, presence):
        with self.lock:
            known = self.view.get(presence["user_id"])
            if known is None or presence["version"] > known["version"]:
                self.view[presence["user_id"]] = presence

    def run(self):
        while not self.stop.finished.is_set():
            ws, _ = open_socket(self.port, self.account)
            status, found = call(self.port, "GET", "/users/presence?user_ids="
                                 + ",".join(map(str, self.listener_ids)), self.account)
            if status == 200:
                for presence in found:
                    self.keep(presence)
            sent = {}
            try:
                while not self.stop.finished.is_set():
                    raw = ws.receive(timeout=0.2)
                    if raw is None:
                        continue
                    message = json.loads(raw)
                    data = message.get("data", {})
                    if message["type"].startswith("listener_") and "version" in data:
                        if data["version"] <= sent.get(data["user_id"], 0):
                            self.older_after_newer += 1
                        sent[data["user_id"]] = data["version"]
                        self.keep(data)
            except ConnectionClosed:
                pass
            finally:
                close(ws)


def engine(url):
    """A SQLAlchemy engine for the checker's own reads and writes."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def prepare(url):
    """A fresh, migrated database."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if os.path.exists(path):
            os.remove(path)
    else:
        create_database(url)
        reset_schema(url)
    migrate([url])


def seed(url):
    """Listeners, watchers (each favoriting every listener) and churners."""
    listeners = list(range(FIRST_ID, FIRST_ID + LISTENERS))
    watchers = list(range(FIRST_ID + 100, FIRST_ID + 100 + WATCHERS))
    churners = list(range(FIRST_ID + 200, FIRST_ID + 200 + CHURNERS))
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # stored naive, in UTC
    users = [{"id": i, "name": f"user_{i}", "role": role, "now": now}
             for ids, role in ((listeners, "listener"), (watchers + churners, "customer"))
             for i in ids]
    with engine(url).begin() as conn:
        conn.execute(sa.text("insert into users (id, username, role, is_active, interests, "
                             "created_at) values (:id, :name, :role, true, '[]', :now)"), users)
        conn.execute(sa.text("insert into user_status (user_id, is_online, is_busy, "
                             "created_at, updated_at, version) "
                             "values (:id, true, false, :now, :now, 1)"), users)
        conn.execute(sa.text("insert into favorites (user_id, listener_id, created_at) "
                             "values (:user, :listener, :now)"),
                     [{"user": w, "listener": n, "now": now}
                      for w in watchers for n in listeners])
    if not url.startswith("sqlite"):
        with engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("vacuum analyze"))
    return listeners, watchers, churners


def change_statuses(port, listener, stop, acked):
    """Busy and available in turn; each acknowledged version noted."""
    busy = True
    while not stop.is_set():
        status, body = call(port, "PUT", "/both/status/me", listener,
                            {"is_online": True, "is_busy": busy})
        if status == 200:
            acked[listener.id] = max(acked.get(listener.id, 0), body["version"])
            ACKNOWLEDGED.append(listener.id)
        busy = not busy
        time.sleep(random.uniform(0.05, 0.3))


def churn(port, churner, listener_ids, stop, last, history):
    """Add and remove favorites of this churner's own listeners, one change at a time;
    the last acknowledged state of each pair noted (None: its last change unanswered, or
    still in flight), and each pair's recent changes kept to explain a failure."""
    while not stop.is_set():
        listener_id = random.choice(listener_ids)
        add = not last.get(listener_id, False)
        method, path = ("POST", "/favorites/add") if add else ("DELETE", "/favorites/remove")
        last[listener_id] = None  # in flight: unknown until answered
        began = time.monotonic()
        status, body = call(port, method, path, churner, {"listener_id": listener_id})
        last[listener_id] = add if status == 200 else None
        history.setdefault(listener_id, collections.deque(maxlen=6)).append(
            f"{method} {status} {(body or {}).get('message') or (body or {}).get('detail')!r}"
            f" {began - STARTED:.2f}+{time.monotonic() - began:.2f}s")
        time.sleep(random.uniform(0.02, 0.1))


def pause_relay(relay, proxy, url):
    """Redis: hold every byte for PAUSE_SECONDS; PostgreSQL: end the listening backends;
    none (SQLite, one process): nothing to pause."""
    if relay == "redis":
        proxy.pause()
        time.sleep(PAUSE_SECONDS)
        proxy.heal()
    elif relay == "postgresql":
        with engine(url).begin() as conn:
            conn.execute(sa.text("select pg_terminate_backend(pid) from pg_stat_activity "
                                 "where application_name like 'saathii-relay:%'"))


def check(relay, seconds, url, redis_url):
    """Run the load and the faults through one relay; the counts and the failures."""
    prepare(url)
    listener_ids, watcher_ids, churner_ids = seed(url)
    # The clock process sweeps every second and takes users unseen for 3 s offline: one
    # more writer of the same rows, at any moment.
    proxy, env = None, {"RELAY_PROBE_SECONDS": "0.5", "RELAY_STALL_SECONDS": "2",
                        "SWEEP_INTERVAL_SECONDS": "1", "PRESENCE_TIMEOUT_SECONDS": "3"}
    if relay == "redis":
        parts = urlsplit(redis_url)
        proxy = TcpProxy(parts.hostname, parts.port or 6379)
        env.update(REDIS_URL=f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}",
                   REDIS_CHANNEL=f"saathii:checker:{os.getpid()}")
    elif relay == "postgresql":
        env.update(NOTIFY_CHANNEL=f"saathii_checker_{os.getpid()}")
    else:  # SQLite alone: one worker, which sweeps itself (no clock process)
        env.update(SCHEDULER_ENABLED="true", EVENT_RELAY="none")
    server = Server(f"checker-{relay}", "wsgi:app", url,
                    WEB_CONCURRENCY="1" if relay == "none" else "2", **env)
    clock = None
    try:
        server.start()
        if relay != "none":
            clock = server.start_clock()
        port = server.port
        listeners = [Account(i) for i in listener_ids]
        stop, finished = threading.Event(), threading.Event()
        stop.drain_until, stop.finished = float("inf"), finished
        feeds = [ListenerFeed(port, account, stop) for account in listeners]
        watchers = [Watcher(port, Account(i), listener_ids, stop) for i in watcher_ids]
        for thread in feeds + watchers:
            thread.start()
        acked, last_by_churner = {}, {i: {} for i in churner_ids}
        history = {i: {} for i in churner_ids}
        share = len(listener_ids) // len(churner_ids)
        load = [threading.Thread(target=change_statuses, args=(port, account, stop, acked),
                                 daemon=True) for account in listeners for _ in range(2)]
        load += [threading.Thread(target=churn, args=(
            port, Account(i), listener_ids[n * share:(n + 1) * share], stop,
            last_by_churner[i], history[i]), daemon=True) for n, i in enumerate(churner_ids)]
        for thread in load:
            thread.start()
        time.sleep(seconds / 2)
        victim = random.choice(server.worker_pids())
        log(f"checker ({relay}): SIGKILL to worker {victim} at "
            f"{time.monotonic() - STARTED:.2f}s")
        os.kill(victim, signal.SIGKILL)
        time.sleep(seconds / 2)
        # The load's last changes are made while the relay is down: only what a process
        # does once its relay is back brings them to its sockets.
        log(f"checker ({relay}): pausing the relay at {time.monotonic() - STARTED:.2f}s; "
            "the load stops meanwhile")
        paused = threading.Thread(target=pause_relay, args=(relay, proxy, url))
        paused.start()
        time.sleep(PAUSE_SECONDS / 2 if relay == "redis" else 0.2)
        stop.drain_until = time.monotonic() + SETTLE_SECONDS
        stop.set()
        paused.join()
        for thread in load:
            thread.join(20)
        running = sum(thread.is_alive() for thread in load)
        if running:  # their last changes are still in flight: no pair can be compared
            last_by_churner = {}
        result = verify(url, port, listeners, feeds, watchers, acked, last_by_churner,
                        history, stop, server)
        if running:
            result["failures"].append(f"{running} load threads still running at least "
                                      "20 s after the load stopped")
        return result
    finally:
        if clock is not None:
            clock.terminate()
            clock.wait(10)
        server.stop()
        if proxy is not None:
            proxy.close()


def stored(url):
    """{listener id: stored favorite event ids}, {churner: listener ids favorited},
    {user: status version}."""
    with engine(url).connect() as conn:
        events, favorites = {}, {}
        for user_id, event_id in conn.execute(
                sa.text("select user_id, id from feed_events order by id")):
            events.setdefault(user_id, []).append(event_id)
        for user_id, listener_id in conn.execute(
                sa.text("select user_id, listener_id from favorites")):
            favorites.setdefault(user_id, set()).add(listener_id)
        versions = dict(conn.execute(sa.text("select user_id, version from user_status")).all())
    return events, favorites, versions


def verify(url, port, listeners, feeds, watchers, acked, last_by_churner, history, stop,
           server):
    """Wait (bounded) for every view to converge; the counts and the failures."""
    events, favorites, versions = stored(url)
    failures = []
    for churner, last in last_by_churner.items():
        for listener_id, favorited in last.items():
            if favorited is not None and (listener_id in favorites.get(churner, ())) != favorited:
                failures.append(f"churner {churner}: favorite of {listener_id} should be "
                                f"{favorited}; its last changes (method, status, message, "
                                f"sent at+took): {list(history[churner].get(listener_id, ()))}")
    for user_id, version in acked.items():
        if versions[user_id] < version:
            failures.append(f"user {user_id}: version {versions[user_id]} < acknowledged {version}")
    truth = {}
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        status, found = call(port, "GET", "/users/presence?user_ids=" + ",".join(
            str(account.id) for account in listeners), listeners[0])
        if status == 200:
            truth = {presence["user_id"]: presence for presence in found}
        wrong = [(watcher.account.id, user_id) for watcher in watchers
                 for user_id, presence in truth.items()
                 if not _same(watcher.view.get(user_id), presence)]
        missing = {feed.account.id: sorted(set(_after(events, feed)) - set(feed.received))
                   for feed in feeds}
        if (status == 200 and not wrong and not any(missing.values())) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    stop.finished.set()
    stop.drain_until = 0
    if wrong:
        failures.append(f"{len(wrong)} watcher views differ from REST: {wrong[:5]}")
    for feed in feeds:
        twice = len(feed.received) - len(set(feed.received))
        if missing[feed.account.id]:
            failures.append(f"listener {feed.account.id} missed events "
                            f"{missing[feed.account.id][:10]}")
        if twice:
            failures.append(f"listener {feed.account.id} got {twice} events twice")
        if feed.resets:
            failures.append(f"listener {feed.account.id} had its cursor reset")
    older = sum(watcher.older_after_newer for watcher in watchers)
    if older:
        failures.append(f"{older} presence events older than one sent before")
    return {
        "favorite_events_stored": sum(len(_after(events, feed)) for feed in feeds),
        "favorite_events_received": sum(len(feed.received) for feed in feeds),
        "listener_reconnects": sum(feed.connections - 1 for feed in feeds),
        "status_changes_acknowledged": len(ACKNOWLEDGED),
        "watcher_views_compared": len(watchers) * len(truth),
        "socket_opens_failed": dict(REFUSALS),
        "server_errors_logged": sum(1 for line in server.problems(limit=None)
                                    if "[ERROR]" in line),
        "failures": failures,
    }


def _after(events, feed):
    return [i for i in events.get(feed.account.id, []) if i > (feed.first_cursor or 0)]


def _same(view, truth):
    """A watcher's view of a listener matches REST: the same state, at a version no
    newer (a heartbeat, such as a socket's opening, moves the version and sends nothing:
    the state is what a screen shows)."""
    if view is None or truth is None:
        return view is truth
    return (view["is_online"], view["is_busy"]) == (truth["is_online"], truth["is_busy"]) \
        and view["version"] <= truth["version"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=with_database(DEFAULT_DATABASE_URL,
                                                                "saathii_bench_checker"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--relay", default="postgresql,redis", help="on PostgreSQL")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    url = libpq_url(args.database_url)
    results = {}
    for relay in ["none"] if url.startswith("sqlite") else args.relay.split(","):
        log(f"checker: {relay} relay, {args.seconds:g} s")
        REFUSALS.clear()
        ACKNOWLEDGED.clear()
        results[relay] = check(relay, args.seconds, url, args.redis_url)
    print(json.dumps(results))
    return 1 if any(result["failures"] for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
