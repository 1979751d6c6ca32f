"""Bench data: a fresh, migrated schema filled with COPY, at full or smoke scale."""
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg

from common import database_name, log, migrate, reset_schema

SIZES = {
    "full": {"users": 100_000, "listeners": 10_000, "heavy_favorites": 1_000,
             "light_customers": 10_000, "light_favorites": 20,
             "sweep_big": 1_000_000, "sweep_small": 10_000, "lapsed": 1_000},
    "smoke": {"users": 2_000, "listeners": 200, "heavy_favorites": 100,
              "light_customers": 200, "light_favorites": 20,
              "sweep_big": 20_000, "sweep_small": 2_000, "lapsed": 100},
}
USERNAME = "bench_user_{:06d}"  # the names bench/feed_sockets.py looks for
LANGUAGES = ["en", "hi", "ta", "te", "bn", "mr"]
INTERESTS = ['["music", "books"]', '["movies"]', '["travel", "food", "poetry"]', "[]"]
USER_COLUMNS = ("id", "username", "role", "sex", "bio", "interests", "profile_image_url",
                "preferred_language", "rating", "country", "is_active", "created_at")
STATUS_COLUMNS = ("user_id", "is_online", "is_busy", "wait_time", "last_seen", "busy_since",
                  "created_at", "updated_at")
NULL = r"\N"


@dataclass
class Dataset:
    """Who is who in the seeded main database."""

    sizes: dict
    listener_ids: list
    heavy_id: int
    light_ids: list
    free_customer_ids: list  # customers with no favorites
    online_ids: list
    heavy_favorite_ids: list = field(default_factory=list)  # ascending
    favorites: int = 0


def ts(value):
    """A naive-UTC timestamp as COPY's text format writes it (the models store naive UTC)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def copy_rows(conn, table, columns, lines, chunk=20_000):
    """COPY tab-separated lines into a table."""
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for start in range(0, len(lines), chunk):
                copy.write("\n".join(lines[start:start + chunk]) + "\n")


def fix_sequences(conn, tables):
    """Move each table's id sequence past the ids COPY wrote explicitly."""
    for table in tables:
        conn.execute(f"select setval(pg_get_serial_sequence('{table}', 'id'), "
                     f"coalesce((select max(id) from {table}), 0) + 1, false)")


def vacuum_analyze(url, tables):
    """VACUUM ANALYZE so the planner and the visibility map see the fresh data, then a
    CHECKPOINT so that writing it out does not happen during a measurement."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"vacuum analyze {table}")
        try:
            conn.execute("checkpoint")
        except psycopg.Error:  # not a superuser: the checkpointer will get to it
            pass


def user_line(user_id, role, now, rng):
    """One users row for COPY."""
    listener = role == "listener"
    return "\t".join((
        str(user_id), USERNAME.format(user_id), role,
        rng.choice(("male", "female", NULL)),
        f"Bench listener {user_id}: happy to talk." if listener else NULL,
        rng.choice(INTERESTS),
        f"https://cdn.saathii.invalid/avatars/{user_id}.jpg" if listener else NULL,
        rng.choice(LANGUAGES),
        f"{rng.uniform(3.0, 5.0):.1f}" if listener else NULL,
        "IN", "t", ts(now - timedelta(days=rng.randint(1, 700)))))


def status_line(user_id, online, now, rng, busy=False, last_seen=None):
    """One user_status row for COPY (busy users have a wait_time that has not expired)."""
    seen = last_seen or (now - timedelta(seconds=rng.randint(0, 60)) if online
                         else now - timedelta(days=rng.randint(1, 30)))
    return "\t".join((
        str(user_id), "t" if online else "f", "t" if busy else "f",
        str(rng.randint(5, 30)) if busy else NULL, ts(seen),
        ts(now - timedelta(seconds=60)) if busy else NULL, ts(now - timedelta(days=400)),
        ts(seen)))


def seed_main(url, sizes, seed=1):
    """Reset, migrate and fill the main bench database; return its Dataset."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    n_users, n_listeners = sizes["users"], sizes["listeners"]
    listener_ids = list(range(1, n_listeners + 1))
    heavy_id = n_listeners + 1
    light_ids = list(range(heavy_id + 1, heavy_id + 1 + sizes["light_customers"]))
    free_ids = list(range(light_ids[-1] + 1, n_users + 1))
    customers = [heavy_id, *light_ids, *free_ids]
    online_customers = set(rng.sample(customers, len(customers) // 10))

    pairs = [(heavy_id, lid) for lid in rng.sample(listener_ids, sizes["heavy_favorites"])]
    for customer in light_ids:
        pairs += [(customer, lid) for lid in rng.sample(listener_ids, sizes["light_favorites"])]
    rng.shuffle(pairs)  # favorite ids interleave between users, as in real life

    users = [user_line(i, "listener" if i <= n_listeners else "customer", now, rng)
             for i in range(1, n_users + 1)]
    statuses = [status_line(i, True, now, rng, busy=rng.random() < 0.1) for i in listener_ids]
    statuses += [status_line(i, i in online_customers, now, rng) for i in customers]
    first = now - timedelta(seconds=len(pairs))
    favorites = [f"{n}\t{user}\t{listener}\t{ts(first + timedelta(seconds=n))}"
                 for n, (user, listener) in enumerate(pairs, start=1)]

    log(f"seeding {database_name(url)}: {n_users} users ({n_listeners} listeners), "
        f"{len(favorites)} favorites")
    with psycopg.connect(url) as conn:
        copy_rows(conn, "users", USER_COLUMNS, users)
        copy_rows(conn, "user_status", STATUS_COLUMNS, statuses)
        copy_rows(conn, "favorites", ("id", "user_id", "listener_id", "created_at"), favorites)
        fix_sequences(conn, ("users", "favorites", "feed_events"))
        heavy_favorites = [row[0] for row in conn.execute(
            "select id from favorites where user_id = %s order by id", (heavy_id,))]
    vacuum_analyze(url, ("users", "user_status", "favorites"))
    online = listener_ids + sorted(online_customers)
    return Dataset(sizes, listener_ids, heavy_id, light_ids, free_ids, online,
                   heavy_favorites, len(favorites))


def seed_sweep(url, rows, lapsed, now, seed=2):
    """A status table of `rows` users, `lapsed` of them online but silent for minutes,
    a tenth online and recent, the rest offline; returns the lapsed ids."""
    rng = random.Random(seed)
    lapsed_ids = sorted(rng.sample(range(1, rows + 1), lapsed))
    lapsed_set = set(lapsed_ids)
    users, statuses = [], []
    for i in range(1, rows + 1):
        users.append(f"{i}\tsweep_user_{i:07d}\t{'listener' if i % 10 == 0 else 'customer'}"
                     f"\t[]\tt\t{ts(now - timedelta(days=30))}")
        if i in lapsed_set:
            seen = now - timedelta(seconds=rng.randint(300, 3600))
            statuses.append(status_line(i, True, now, rng, last_seen=seen))
        else:
            statuses.append(status_line(i, rng.random() < 0.1, now, rng))
    with psycopg.connect(url) as conn:
        copy_rows(conn, "users", ("id", "username", "role", "interests", "is_active",
                                  "created_at"), users)
        copy_rows(conn, "user_status", STATUS_COLUMNS, statuses)
        fix_sequences(conn, ("users",))
    vacuum_analyze(url, ("users", "user_status"))
    return lapsed_ids


def short(rows):
    """1000000 -> "1m", 10000 -> "10k": the sweep databases' name suffixes."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


def prepare(urls):
    """Fresh schemas for these databases, migrated with `flask db upgrade`."""
    for url in urls:
        reset_schema(url)
    migrate(urls)
