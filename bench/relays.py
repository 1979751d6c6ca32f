"""Events per second through each relay, and what each costs the transaction that emits.

    python bench/relays.py [--events 4000] [--threads 1,8] [--database-url URL]

For each relay (none, PostgreSQL LISTEN/NOTIFY, Redis) and each number of writer
threads, the service's own code commits `--events` transactions, each one UPDATE of a
user's status and one emitted event, as a status change does; a second relay in the same
process (another origin, as another worker would be) counts what arrives. Reported:
transactions committed per second, events received per second (first commit to last
receipt), and the latency from the start of each commit to its receipt. Prints one JSON line; only 127.0.0.1 is contacted.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid

from common import DEFAULT_DATABASE_URL, ROOT, app_env, create_database, libpq_url, \
    reset_schema, with_database
from common import migrate

USERS = 1000


class Counter:
    """Stands in for a hub: records when each relayed event arrives."""

    def __init__(self):
        self.arrived = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.expected = 0

    def dispatch(self, event):
        with self.lock:
            self.arrived[event.data["n"]] = time.perf_counter()
            if len(self.arrived) >= self.expected:
                self.done.set()


def seed(url):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into users (id, username, role, is_active, interests, created_at) "
                     "select n, 'user_' || n, 'listener', true, '[]', now() "
                     "from generate_series(1, %s) n", (USERS,))
        conn.execute("insert into user_status (user_id, is_online, is_busy, created_at, "
                     "updated_at, version) select n, true, false, now(), now(), 1 "
                     "from generate_series(1, %s) n", (USERS,))
        conn.execute("vacuum analyze")


def measure(relay, threads, events, redis_url):
    """Commit `events` emitting transactions from `threads` threads through one relay."""
    sys.path.insert(0, ROOT)
    import sqlalchemy as sa

    from config import Config
    from saathii import create_app
    from saathii.events import Event, publish_committed, transaction
    from saathii.extensions import db
    from saathii.realtime.pg_relay import PostgresRelay
    from saathii.realtime.relay import RedisRelay

    channel = f"saathii_bench_{uuid.uuid4().hex[:8]}"

    class BenchConfig(Config):
        EVENT_RELAY = relay
        REDIS_URL = redis_url if relay == "redis" else None
        REDIS_CHANNEL = NOTIFY_CHANNEL = channel
        SCHEDULER_ENABLED = False
        SQLALCHEMY_ENGINE_OPTIONS = {**Config.SQLALCHEMY_ENGINE_OPTIONS,
                                     "pool_size": threads + 2}

    app = create_app(BenchConfig)
    counter = Counter()
    counter.expected = events
    receiver = None
    with app.app_context():
        if relay == "postgresql":
            receiver = PostgresRelay(db.engine, counter, channel)
        elif relay == "redis":
            receiver = RedisRelay(redis_url, counter, channel)
        if receiver is not None:
            receiver.start(wait=10)
    update = sa.text("update user_status set updated_at = now(), version = version + 1 "
                     "where user_id = :id")
    committed = {}

    def write(worker):
        with app.app_context():
            for n in range(worker, events, threads):
                user_id = n % USERS + 1
                made = [Event("listener_busy", {"n": n, "user_id": user_id, "is_busy": True},
                              subject_id=user_id)]
                with transaction(made) as connection:
                    connection.execute(update, {"id": user_id})
                    committed[n] = time.perf_counter()  # latency counts from the commit
                publish_committed(made)

    writers = [threading.Thread(target=write, args=(worker,)) for worker in range(threads)]
    started = time.perf_counter()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    wrote = time.perf_counter() - started
    result = {"relay": relay, "threads": threads, "events": events,
              "commits_per_s": events / wrote}
    if receiver is not None:
        counter.done.wait(30)
        receiver.stop()
        received = len(counter.arrived)
        latest = max(counter.arrived.values()) if counter.arrived else started
        latency = sorted(counter.arrived[n] - committed[n] for n in counter.arrived
                         if n in committed)
        result.update({
            "received": received, "events_per_s": received / (latest - started),
            "latency_p50_ms": statistics.median(latency) * 1000 if latency else None,
            "latency_p99_ms": latency[int(len(latency) * 0.99) - 1] * 1000 if latency else None,
        })
    with app.app_context():
        db.engine.dispose()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=with_database(DEFAULT_DATABASE_URL,
                                                                "saathii_bench_relays"))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--threads", default="1,8")
    args = parser.parse_args()
    url = libpq_url(args.database_url)
    create_database(url)
    reset_schema(url)
    migrate([url])
    seed(url)
    os.environ.update(app_env(url))  # the service's settings, as the bench's web process
    results = [measure(relay, int(threads), args.events, args.redis_url)
               for threads in args.threads.split(",")
               for relay in ("none", "postgresql", "redis")]
    print(json.dumps({"database": url, "results": results}))
    return 0 if all(r.get("received", r["events"]) == r["events"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
