"""Capacity: how many connected users the Procfile's web process carries on this machine.

    python bench/capacity.py [--users 10000] [--steady 60] [--processes 1]
                             [--redis-url URL] [--no-heartbeats] [--smoke]

Every user holds a feed socket and sends a REST heartbeat every 30 s (as the seed
documents ask; with --no-heartbeats none: the socket keeps them online); a tenth are listeners, each favorited by about 90 customers, toggling busy
and available every 5 minutes on average; customers add and remove favorites (20 a
second) and read their list and their favorites' presence (20 a second each). Phases:
connect (every socket opens and is greeted), ramp (everyone's first heartbeat within 30 s,
as after an evening's start), steady (--steady seconds, measured). Prints per request kind
p50 / p99 / errors per phase, presence-event delivery latency (change's timestamp to the
customer's socket), server and PostgreSQL CPU (cores) and server memory per socket, and
whether events arrived exactly once: no presence event twice on a socket, and once the
load stops, every customer's last word on each favorite listener is the listener's
state in the database. --processes 2 starts two independent web processes (as two dynos,
one worker each by default) and splits the users between them, so events must cross
through the relay. On a PostgreSQL that runs without autovacuum (this machine's) the
benchmark does its work: VACUUM ANALYZE of the tables every AUTOVACUUM_SECONDS, its CPU
counted with PostgreSQL's (without it, statistics from the seed, when no one was online,
made PostgreSQL look users up through the partial index of online users: four times the
CPU a heartbeat, BENCHMARKS.md). The users come from several client processes (bench/wsclient.py under gevent; one process
holds at most ~19,000 files). Seeds its own database; only 127.0.0.1 is contacted; every
loop is bounded; exits non-zero on a lost socket, an error answer or a server traceback.
"""
import sys

if "--client" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from datetime import datetime  # noqa: E402

from common import (DEFAULT_DATABASE_URL, RESULTS, BenchError, ClientProcess,  # noqa: E402
                    cpu_seconds, create_database, libpq_url, log, raise_fd_limit, stamp,
                    timed_request, token, with_database)

BEAT_SECONDS, TOGGLE_MEAN_SECONDS = 30, 300
CHURN_PER_SECOND, PAGES_PER_SECOND, PRESENCE_PER_SECOND = 20, 20, 20
FAVORITES_EACH = 10  # a customer's favorites: 9 customers a listener, x 10 = about 90
USERS_PER_CLIENT = 6000
SETTLE_SECONDS = 3  # after the load stops, for the last events to arrive
REOPENS = 10  # attempts of a socket open answered 503
KINDS = ("heartbeat", "status", "favorite_add", "favorite_remove", "page", "presence")
# autovacuum_naptime's default is 60 s, and a table changed by a tenth is analyzed at the
# next round: a busy table every minute at most; 30 s keeps the plans of a 90 s run fresh.
AUTOVACUUM_SECONDS = 30
VACUUMED = ("user_status", "users", "favorites", "held_sockets", "socket_processes",
            "feed_events")


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else None


# ----------------------------------------------------------------------- client process

def client_main(args):
    """One client process: users from stdin (JSON), then commands: phase NAME, report."""
    import gevent
    import gevent.lock
    from gevent.fileobject import FileObjectPosix

    from wsclient import Closed, Rejected, WebSocket

    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    spec = json.loads(stdin.readline())
    users, listeners, customers = spec["users"], spec["listeners"], spec["customers"]
    favorites = {int(k): v for k, v in spec["favorites"].items()}
    actor = spec["actor"]  # this process also sends the churn and the reads
    phase = {"name": "connect"}
    samples = {}  # (phase, kind) -> [seconds]
    failures = {}  # (phase, kind) -> {the status, or the error's name: count}
    deliveries = []  # (phase, seconds) of presence events
    views = {}  # (customer, listener) -> [version, is_online, is_busy, events received]
    duplicates = []  # (customer, listener, version) received again
    churned = set()  # (customer, listener) pairs the churn touched
    lost = []
    greeted = []
    refusals = []  # 503s followed by a later attempt

    def say(**fields):
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def record(kind, seconds, status):
        key = f"{phase['name']}/{kind}"
        if status == 200:
            samples.setdefault(key, []).append(seconds)
        else:
            failures.setdefault(key, collections.Counter())[str(status)] += 1

    def call(kind, method, path, user_id, body=None):
        # A new connection each time, closed after: a phone beating every 30 s keeps none.
        conn, status, seconds, _ = timed_request(args.port, method, path, tokens[user_id],
                                                 body)
        if conn is not None:
            conn.close()
        record(kind, seconds, status)

    def open_feed(user_id):
        """Open and greet a socket; a 503 (full, or opens shed) is followed as docs/api.md
        asks: again after a jittered delay, a few times."""
        for attempt in range(REOPENS):
            try:
                with opening:  # at most --concurrency opens in flight
                    ws = WebSocket.connect(args.port, f"/ws/feed?token={tokens[user_id]}",
                                           timeout=60)
                    hello = json.loads(ws.receive())
                    assert hello["type"] == "connection_established", hello
                    return ws
            except Rejected as refused:
                if "503" not in str(refused) or attempt == REOPENS - 1:
                    raise
                refusals.append(1)
                gevent.sleep(random.uniform(1, 3))

    def hold(user_id):
        try:
            ws = open_feed(user_id)
            ws.sock.settimeout(None)  # pings come every FEED_PING_INTERVAL_SECONDS
            greeted.append(time.time())
            while True:
                message = json.loads(ws.receive())
                if message["type"].startswith("listener_"):
                    sent = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
                    deliveries.append((phase["name"], time.time() - sent.timestamp()))
                    data = message["data"]
                    view = views.setdefault((user_id, data["user_id"]), [0, None, None, 0])
                    if data["version"] == view[0]:
                        duplicates.append((user_id, data["user_id"], data["version"]))
                    elif data["version"] > view[0]:
                        view[:3] = data["version"], data["is_online"], data["is_busy"]
                    view[3] += 1
        except Closed as closed:
            lost.append(f"closed {closed.code} {closed.reason}")
        except Exception as err:  # noqa: BLE001 - counted and reported
            lost.append(f"{type(err).__name__}: {str(err)[:80]}")

    def beat(user_id):
        gevent.sleep(random.uniform(0, BEAT_SECONDS))  # everyone comes online within 30 s
        while True:
            call("heartbeat", "POST", "/both/status/heartbeat", user_id)
            gevent.sleep(BEAT_SECONDS)

    def toggle(user_id):
        busy = False
        while True:
            gevent.sleep(random.expovariate(1 / TOGGLE_MEAN_SECONDS))
            busy = not busy
            call("status", "PUT", "/both/status/me", user_id,
                 {"is_busy": busy, "wait_time": 5} if busy else {"is_busy": False})

    def every(rate, action):
        while True:
            gevent.spawn(action)
            gevent.sleep(random.expovariate(rate))

    def churn():
        customer = random.choice(customers)
        listener = random.choice(listeners)
        churned.add((customer, listener))
        call("favorite_add", "POST", "/favorites/add", customer, {"listener_id": listener})
        call("favorite_remove", "DELETE", "/favorites/remove", customer,
             {"listener_id": listener})

    def page():
        call("page", "GET", "/favorites?page=1&per_page=20", random.choice(customers))

    def presence():
        customer = random.choice(customers)
        ids = ",".join(map(str, favorites.get(customer, listeners[:10])))
        call("presence", "GET", f"/users/presence?user_ids={ids}", customer)

    tokens = {user_id: token(user_id) for user_id in set(users) | set(customers)}
    say(event="ready")
    opening = gevent.lock.BoundedSemaphore(args.concurrency)
    holders = [gevent.spawn(hold, user_id) for user_id in users]
    started = time.time()
    while len(greeted) + len(lost) < len(users) and time.time() - started < 600:
        gevent.sleep(0.1)
    say(event="connected", greeted=len(greeted), lost=lost[:5], lost_count=len(lost),
        refused=len(refusals),
        first=min(greeted, default=None), last=max(greeted, default=None))
    workers = []
    while True:
        line = stdin.readline().decode().strip()
        if not line or line == "close":
            break
        if line.startswith("phase "):
            phase["name"] = line.split()[1]
            if phase["name"] == "done":  # the load stops; the sockets stay, and listen
                gevent.killall(workers, block=False)
                workers = []
            if phase["name"] == "ramp":
                if spec["heartbeats"]:
                    workers += [gevent.spawn(beat, u) for u in users]
                workers += [gevent.spawn(toggle, u) for u in set(users) & set(listeners)]
                if actor:
                    workers += [gevent.spawn(every, CHURN_PER_SECOND, churn),
                                gevent.spawn(every, PAGES_PER_SECOND, page),
                                gevent.spawn(every, PRESENCE_PER_SECOND, presence)]
            say(event="phase", name=phase["name"])
        elif line == "report":
            say(event="report", samples=samples, failures=failures, deliveries=deliveries,
                lost=lost[:5], lost_count=len(lost), duplicates=duplicates[:20],
                duplicate_count=len(duplicates), churned=sorted(churned),
                views=[[c, listener, *view] for (c, listener), view in views.items()])
    gevent.killall(workers + holders, block=False)


class Client(ClientProcess):
    """A client process of this script."""

    def __init__(self, port, spec, concurrency):
        super().__init__([sys.executable, os.path.abspath(__file__), "--client", "--port",
                          str(port), "--concurrency", str(concurrency)], json.dumps(spec), 60)


# ----------------------------------------------------------------------- the run

def seed(url, users):
    """users users, a tenth listeners (online, available); each customer favorites 10."""
    import psycopg

    from common import migrate, reset_schema

    reset_schema(url)
    migrate([url])
    listeners = list(range(1, users // 10 + 1))
    customers = list(range(users // 10 + 1, users + 1))
    rng = random.Random(7)
    favorites = {c: sorted(rng.sample(listeners, min(FAVORITES_EACH, len(listeners))))
                 for c in customers}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        with conn.cursor().copy("COPY users (id, username, role, is_active, interests, "
                                "created_at, favorites_version) FROM STDIN") as copy:
            for n in range(1, users + 1):
                role = "listener" if n <= len(listeners) else "customer"
                copy.write_row((n, f"capacity_{n}", role, True, "[]", "now", 0))
        with conn.cursor().copy("COPY user_status (user_id, is_online, is_busy, last_seen, "
                                "created_at, updated_at, version) FROM STDIN") as copy:
            for n in range(1, users + 1):
                copy.write_row((n, False, False, "now", "now", "now", 1))
        with conn.cursor().copy("COPY favorites (user_id, listener_id, created_at) "
                                "FROM STDIN") as copy:
            for customer, chosen in favorites.items():
                for listener in chosen:
                    copy.write_row((customer, listener, "now"))
        conn.execute("select setval(pg_get_serial_sequence('users', 'id'), %s)", (users + 1,))
        conn.execute("vacuum analyze")
    return listeners, customers, favorites


class Autovacuum:
    """What autovacuum does where PostgreSQL runs without it: VACUUM ANALYZE of the tables
    the load writes, every AUTOVACUUM_SECONDS, in a thread, until stopped."""

    def __init__(self, url):
        import threading

        self.url, self.stop, self.rounds = url, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.conn = None

    def __enter__(self):
        import psycopg

        # One connection for the whole run: its backend is alive at every phase's CPU
        # reading, so its work counts as PostgreSQL's.
        self.conn = psycopg.connect(libpq_url(self.url), autocommit=True)
        if self.conn.execute("show autovacuum").fetchone()[0] == "on":
            self.conn.close()  # PostgreSQL's own does it
            return self
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(60)
        self.conn.close()

    def _run(self):
        import psycopg

        while not self.stop.wait(AUTOVACUUM_SECONDS):
            try:
                for table in VACUUMED:
                    self.conn.execute(f"vacuum analyze {table}")
                self.rounds += 1
            except psycopg.Error as err:
                log(f"autovacuum stand-in: {err}")


def postgres_pids():
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as file:
                    if file.read().strip().startswith("postgres"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as file:
                total += next(int(line.split()[1]) for line in file if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def summarize(reports, phase_name):
    kinds = {}
    for kind in KINDS:
        key = f"{phase_name}/{kind}"
        values = [s for r in reports for s in r["samples"].get(key, [])]
        why = sum((collections.Counter(r["failures"].get(key, {})) for r in reports),
                  collections.Counter())
        kinds[kind] = {"count": len(values), "errors": sum(why.values()), "error_kinds": why,
                       "p50_ms": round(1000 * (percentile(values, 0.5) or 0), 1),
                       "p99_ms": round(1000 * (percentile(values, 0.99) or 0), 1)}
    delivered = [s for r in reports for p, s in r["deliveries"] if p == phase_name]
    kinds["delivery"] = {"count": len(delivered),
                         "p50_ms": round(1000 * (percentile(delivered, 0.5) or 0), 1),
                         "p99_ms": round(1000 * (percentile(delivered, 0.99) or 0), 1)}
    return kinds


def run(args):
    from contextlib import ExitStack

    from server import Server

    url = args.database_url
    create_database(url)
    log(f"seeding {args.users:,} users")
    listeners, customers, favorites = seed(url, args.users)
    users = listeners + customers
    random.Random(3).shuffle(users)
    parts = max(args.processes, math.ceil(len(users) / USERS_PER_CLIENT))
    env = {"SCHEDULER_ENABLED": "true", "RATELIMIT_HEARTBEAT": "12 per minute",
           "RATELIMIT_FAVORITE_CHANGES": "60 per minute",
           "RATELIMIT_PRESENCE_LOOKUPS": "120 per minute",
           "RATELIMIT_FEED_CONNECTS": "30 per minute"}
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.processes > 1:  # as many workers in all as one process has by default
        env["WEB_CONCURRENCY"] = str(args.workers or 1)
    elif args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    result = {"users": args.users, "clients": parts, "processes": args.processes,
              "heartbeats": not args.no_heartbeats}
    with ExitStack() as stack:
        vacuum = stack.enter_context(Autovacuum(url))
        servers = [stack.enter_context(Server(f"capacity-{n}", "wsgi:app", url, **env))
                   for n in range(args.processes)]
        workers = [pid for server in servers for pid in server.worker_pids()]
        idle_rss = rss_mib(workers)
        clients, assigned = [], {}
        try:
            for n in range(parts):
                mine = users[n::parts]
                assigned.update(dict.fromkeys(mine, n % args.processes))
                clients.append(Client(servers[n % args.processes].port, {
                    "users": mine, "listeners": listeners, "customers": customers,
                    "favorites": {c: favorites[c] for c in mine if c in favorites},
                    "actor": n == 0, "heartbeats": not args.no_heartbeats},
                    args.concurrency))
            connected = [c.expect("connected", 900) for c in clients]
            greeted = sum(c["greeted"] for c in connected)
            first = min(c["first"] for c in connected if c["first"])
            last = max(c["last"] for c in connected if c["last"])
            result["connect"] = {"greeted": greeted, "seconds": round(last - first, 1),
                                 "per_second": round(greeted / max(0.1, last - first)),
                                 "lost": sum(c["lost_count"] for c in connected),
                                 "refused_then_retried": sum(c["refused"] for c in connected)}
            if args.processes > 1:
                result["connect"]["per_process"] = [
                    sum(c["greeted"] for n, c in enumerate(connected)
                        if n % args.processes == p) for p in range(args.processes)]
            result["rss_per_socket_kib"] = round(
                (rss_mib(workers) - idle_rss) * 1024 / max(1, greeted), 1)
            log(f"connect: {result['connect']}, {result['rss_per_socket_kib']} KiB a socket")
            for name, seconds in (("idle", args.idle), ("ramp", args.ramp),
                                  ("steady", args.steady)):
                server_cpu, pg_cpu = cpu_seconds(workers), cpu_seconds(postgres_pids())
                client_cpu = sum(client.cpu_seconds() for client in clients)
                for client in clients:
                    client.send(f"phase {name}")
                for client in clients:
                    client.expect("phase", 30)
                time.sleep(seconds)
                result[f"{name}_cores"] = {
                    "server": round((cpu_seconds(workers) - server_cpu) / seconds, 2),
                    "postgresql": round((cpu_seconds(postgres_pids()) - pg_cpu) / seconds, 2),
                    "clients": round((sum(client.cpu_seconds() for client in clients)
                                      - client_cpu) / seconds, 2)}
            for client in clients:
                client.send("phase done")
                client.expect("phase", 30)
            time.sleep(SETTLE_SECONDS)  # the load has stopped: the last events arrive
            for client in clients:
                client.send("report")
            reports = [client.expect("report", 120) for client in clients]
            result["events"] = exactly_once(url, reports, favorites, assigned)
            result["rss_mib"] = {"idle": round(idle_rss), "connected": round(rss_mib(workers))}
        finally:
            for client in clients:
                client.stop()
        # Every socket closed: how much of the workers' memory goes back, and when.
        time.sleep(args.after_close)
        result["rss_mib"]["closed"] = round(rss_mib(workers))
        result["rss_mib"]["after_seconds"] = args.after_close
        result["problems"] = [line for server in servers for line in server.problems(50)
                              if "saathii.admission" not in line][:5]
        result["autovacuum_rounds"] = vacuum.rounds
    for name in ("ramp", "steady"):
        result[name] = summarize(reports, name)
    result["idle"] = {"cores": result.pop("idle_cores")}
    result["lost"] = sum(r["lost_count"] for r in reports)
    return result


def exactly_once(url, reports, favorites, assigned):
    """Whether presence events arrived exactly once: none twice on a socket, and for each
    customer and seeded favorite the churn left alone, the last state received is the
    listener's state in the database now (the load has stopped). Also how many events
    crossed between processes (the customer's socket on another than the listener's)."""
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        final = {user_id: (online, busy) for user_id, online, busy in conn.execute(
            "select user_id, is_online, is_busy from user_status")}
    churned = {tuple(pair) for r in reports for pair in r["churned"]}
    views = [view for r in reports for view in r["views"]]
    checked = wrong = crossed = received = 0
    for customer, listener, _version, online, busy, count in views:
        received += count
        if assigned.get(customer) != assigned.get(listener):
            crossed += count
        if listener in favorites.get(customer, ()) and (customer, listener) not in churned:
            checked += 1
            wrong += (online, busy) != final[listener]
    return {"received": received, "crossed": crossed,
            "duplicates": sum(r["duplicate_count"] for r in reports),
            "duplicate_examples": [d for r in reports for d in r["duplicates"]][:5],
            "screens_checked": checked, "screens_wrong": wrong}


def table(results):
    lines = ["| users | phase | " + " | ".join(KINDS) + " | presence delivery | server / "
             "PostgreSQL / clients cores |", "|---:|---|" + "---:|" * (len(KINDS) + 2)]
    for result in results:
        for name in ("ramp", "steady"):
            row = result[name]
            cells = [f"{row[k]['p50_ms']} / {row[k]['p99_ms']}"
                     + (f" ({row[k]['errors']} err)" if row[k]["errors"] else "")
                     for k in KINDS]
            cores = result[f"{name}_cores"]
            who = f"{result['users']:,}" + ("" if result.get("heartbeats", True)
                                             else " (sockets, no heartbeats)")
            lines.append(f"| {who} | {name} | " + " | ".join(cells) +
                         f" | {row['delivery']['p50_ms']} / {row['delivery']['p99_ms']} | "
                         f"{cores['server']} / {cores['postgresql']} / {cores['clients']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="10000",
                        help="users, or several separated by commas (each its own run)")
    parser.add_argument("--steady", type=float, default=60)
    parser.add_argument("--ramp", type=float, default=BEAT_SECONDS,
                        help="seconds of the ramp (everyone's first beat comes within 30 s)")
    parser.add_argument("--idle", type=float, default=15,
                        help="seconds of sockets alone (no requests) before the ramp")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="socket opens in flight per client process")
    parser.add_argument("--database-url", default=with_database(DEFAULT_DATABASE_URL,
                                                                "saathii_bench_capacity"))
    parser.add_argument("--redis-url")
    parser.add_argument("--processes", type=int, default=1,
                        help="independent web processes (as dynos), users split between them")
    parser.add_argument("--workers", type=int, default=None,
                        help="WEB_CONCURRENCY of each (default: the Procfile's, or 1 each "
                             "with --processes 2 or more)")
    parser.add_argument("--after-close", type=float, default=60,
                        help="seconds after the sockets close to read the memory again")
    parser.add_argument("--no-heartbeats", action="store_true",
                        help="users send no REST heartbeats: their sockets keep them online "
                             "(PRESENCE_FROM_SOCKETS, on by default)")
    parser.add_argument("--smoke", action="store_true",
                        help="300 users, 10 s ramp, 10 s steady")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    raise_fd_limit()
    counts = [300] if args.smoke else [int(n) for n in args.users.split(",")]
    if args.smoke:
        args.steady, args.after_close, args.idle, args.ramp = 10, 2, 2, 10
    results = []
    for users in counts:
        args.users = users
        result = run(args)
        log(json.dumps(result)[:2000])
        results.append(result)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"capacity-{stamp()}.json"), "w") as file:
        json.dump(results, file, indent=2)
    print("p50 / p99 in ms per request kind; presence delivery from the change's timestamp "
          "to the customer's socket")
    print(table(results))
    for result in results:
        print(f"- {result['users']:,} users: {result['connect']['greeted']:,} sockets greeted "
              f"in {result['connect']['seconds']} s ({result['connect']['per_second']:,}/s), "
              f"{result['rss_per_socket_kib']} KiB of worker memory a socket, "
              f"{result['lost']} sockets lost; workers' memory {result['rss_mib']['idle']} MiB "
              f"idle, {result['rss_mib']['connected']} MiB connected, "
              f"{result['rss_mib']['closed']} MiB {result['rss_mib']['after_seconds']:g} s "
              f"after every socket closed; sockets alone (no requests): {result['idle']['cores']}"
              " cores")
        events = result["events"]
        print(f"  events: {events['received']:,} presence events received "
              f"({events['crossed']:,} across processes), {events['duplicates']} twice; "
              f"{events['screens_checked']:,} screens checked at the end, "
              f"{events['screens_wrong']} wrong; sockets per process: "
              f"{result['connect'].get('per_process', [result['connect']['greeted']])}")
        for name in ("ramp", "steady"):
            why = sum((collections.Counter(result[name][k]["error_kinds"]) for k in KINDS),
                      collections.Counter())
            if why:
                print(f"  {name} errors by answer (a status, or the client's error): "
                      f"{dict(why)}")
    bad = [r for r in results if r["lost"] or r["problems"] or r["connect"]["lost"]
           or r["events"]["duplicates"] or r["events"]["screens_wrong"]
           or not r["events"]["screens_checked"]
           or any(r[p][k]["errors"] for p in ("ramp", "steady") for k in KINDS)]
    if bad:
        raise SystemExit(f"capacity: errors, lost sockets or server problems: "
                         f"{[(r['users'], r['problems']) for r in bad]}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as err:
        sys.exit(f"bench: {err}")
