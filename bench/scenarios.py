"""The HTTP scenarios: their request files, a correctness probe each, and wrk runs."""
import http.client
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import psycopg

from common import BENCH, BenchError, log, token

LUA = os.path.join(BENCH, "lua")
ARRIVALS = 2_000  # listeners that come online in the comes_online scenario
ARRIVAL_CONNECTIONS = 32  # requests in flight for the state-change surges
ARRIVAL_RUNS = 3  # comes_online runs (the median is kept), each with its own users


@dataclass
class Scenario:
    """One HTTP scenario: what it sends and the throughput it should reach."""

    name: str
    title: str
    script: str       # rotate.lua, pairs.lua or once.lua (each request sent once)
    target: float     # minimum ratio
    versus: str = "floor"  # the ratio is to the floor, or to another scenario
    unit: str = "requests"
    connections: int | None = None  # requests in flight; None: the run's --connections
    warmup: str | None = None  # warm up with this scenario's requests (not its own)
    reset: bool = False  # reset_state() before the measured run and after it


SCENARIOS = [
    Scenario("floor", "floor: bare Flask app returning {}", "rotate.lua", 0),
    Scenario("heartbeat", "POST /both/status/heartbeat, distinct online users",
             "rotate.lua", 0.70),
    Scenario("favorites_page", "GET /favorites page 1 (per_page 20), 1,000-favorite customer",
             "rotate.lua", 0.50),
    Scenario("favorites_cursor", "GET /favorites?limit=20&max_id= near the end of that list",
             "rotate.lua", 0.95, versus="favorites_page"),
    Scenario("favorites_304", "GET /favorites page 1 of that customer, If-None-Match current "
             "(304)", "rotate.lua", 0.60),
    Scenario("status_304", "GET /both/status/me, If-None-Match current (304), varied users",
             "rotate.lua", 0.60),
    Scenario("presence_batch", "GET /users/presence with 100 ids, varied ids and callers",
             "rotate.lua", 0.50),
    Scenario("favorites_add_remove", "POST /favorites/add then DELETE /favorites/remove",
             "pairs.lua", 0.40, unit="requests (2 per add/remove pair)", reset=True),
    Scenario("comes_online", "POST /both/status/heartbeat, first beat of offline listeners "
             "(each comes online: one event)", "once.lua", 0.30, unit="users",
             connections=ARRIVAL_CONNECTIONS, warmup="heartbeat", reset=True),
    Scenario("status_toggle", "PUT /both/status/me busy, then available, online listeners "
             "(each an event)", "pairs.lua", 0.30, connections=ARRIVAL_CONNECTIONS,
             reset=True),
]
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


BUSY, AVAILABLE = '{"is_busy": true}', '{"is_busy": false}'


def _line(method, path, tok="", body=""):
    return f"{method}\t{path}\t{tok}\t{body}"


def arrivals(data):
    """The sets of listeners that come online, one per run of comes_online (the last
    listeners: each set's tokens are new to the workers, as after a deploy), and the
    listeners that toggle busy (the others)."""
    listeners = data.listener_ids
    count = min(ARRIVALS, len(listeners) // 5)
    sets = [listeners[len(listeners) - count * (n + 1):len(listeners) - count * n]
            for n in range(ARRIVAL_RUNS)]
    return sets, listeners[:len(listeners) - count * ARRIVAL_RUNS]


def request_lines(data, rng):
    """The request file lines of every scenario for a seeded Dataset."""
    users = data.sizes["users"]
    everyone = range(1, users + 1)
    heavy = token(data.heavy_id)
    oldest = data.heavy_favorite_ids[20:60] or data.heavy_favorite_ids[-1:]
    callers = rng.sample(everyone, min(5000, users))
    presence = [_line("GET", "/users/presence?user_ids="
                      + ",".join(map(str, rng.sample(everyone, 100))), token(caller))
                for caller in callers]
    customers = data.free_customer_ids[:20_000]
    favorites = ['{"listener_id": %d}' % rng.choice(data.listener_ids) for _ in customers]
    arriving, toggling = arrivals(data)
    return {
        "floor": [_line("GET", "/", token(u)) for u in rng.sample(everyone, min(5000, users))],
        "heartbeat": [_line("POST", "/both/status/heartbeat", token(u))
                      for u in data.listener_ids[:10_000]],
        "favorites_page": [_line("GET", "/favorites?page=1&per_page=20", heavy)],
        "favorites_cursor": [_line("GET", f"/favorites?limit=20&max_id={fid}", heavy)
                             for fid in oldest],
        # Conditional GETs: probe() adds each line's current ETag.
        "favorites_304": [_line("GET", "/favorites?page=1&per_page=20", heavy)],
        "status_304": [_line("GET", "/both/status/me", token(u))
                       for u in rng.sample(everyone, min(2000, users))],
        "presence_batch": presence,
        "favorites_add_remove": [
            f"{token(c)}\tPOST\t/favorites/add\t{body}\tDELETE\t/favorites/remove\t{body}"
            for c, body in zip(customers, favorites)],
        **{once_file("comes_online", n): [_line("POST", "/both/status/heartbeat", token(u))
                                           for u in users]
           for n, users in enumerate(arriving)},
        "status_toggle": [
            f"{token(u)}\tPUT\t/both/status/me\t{BUSY}\tPUT\t/both/status/me\t{AVAILABLE}"
            for u in toggling],
    }


def once_file(name, run):
    """The request file of one run of a once.lua scenario."""
    return name if run == 0 else f"{name}_{run + 1}"


def write_request_files(lines, folder):
    """Write each scenario's lines to folder/NAME.tsv; return {name: path}."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, rows in lines.items():
        paths[name] = os.path.join(folder, f"{name}.tsv")
        with open(paths[name], "w") as file:
            file.write("\n".join(rows) + "\n")
    return paths


def _send(port, method, path, tok, body=""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    if body:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 200:
        raise BenchError(f"{method} {path} answered {response.status}: {payload[:300]!r}")
    return json.loads(payload)


def _etag(port, path, tok, etag=None):
    """(status, ETag) of a GET, conditional when an ETag is given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {tok}"}
    if etag:
        headers["If-None-Match"] = etag
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, response.getheader("ETag")


def with_etags(path_of_file, port):
    """Give each conditional GET of a request file the current ETag of its answer, and
    check that sending it back is answered 304."""
    with open(path_of_file) as file:
        lines = [line.rstrip("\n").split("\t")[:3] for line in file if line.strip()]
    rows = []
    for method, path, tok in lines:
        status, etag = _etag(port, path, tok)
        if status != 200 or not etag:
            raise BenchError(f"GET {path} answered {status} with ETag {etag!r}")
        rows.append(f"{method}\t{path}\t{tok}\t\t{etag}")
    status, _ = _etag(port, lines[0][1], lines[0][2], rows[0].rsplit("\t", 1)[1])
    if status != 304:
        raise BenchError(f"GET {lines[0][1]} with its ETag answered {status}, not 304")
    with open(path_of_file, "w") as file:
        file.write("\n".join(rows) + "\n")


def probe(name, port, path_of_file, data):
    """Send a scenario's first request once and check the answer is what it should be."""
    if name.endswith("_304"):
        with_etags(path_of_file, port)
        return
    with open(path_of_file) as file:
        first = file.readline().rstrip("\n")
    if name in ("favorites_add_remove", "status_toggle"):
        tok, *pair = first.split("\t")
        answers = [_send(port, pair[0], pair[1], tok, pair[2]),
                   _send(port, pair[3], pair[4], tok, pair[5])]
        if name == "favorites_add_remove":
            ok = answers[0]["is_favorited"] and not answers[1]["is_favorited"]
        else:
            ok = [(a["is_online"], a["is_busy"]) for a in answers] == [(True, True),
                                                                       (True, False)]
    else:
        answer = _send(port, *first.split("\t"))
        per_page = min(20, len(data.heavy_favorite_ids))
        if name == "floor":
            ok = answer == {}
        elif name in ("heartbeat", "comes_online"):
            ok = answer == {"message": "Heartbeat received"}
        elif name == "presence_batch":
            ok = isinstance(answer, list) and len(answer) == 100
        else:
            ok = len(answer["favorites"]) == per_page and (
                name == "favorites_cursor"
                or answer["total_count"] == len(data.heavy_favorite_ids))
    if not ok:
        raise BenchError(f"{name}: unexpected answer to its first request")


def reset_state(name, url, data):
    """Put a state-changing scenario's users back where it starts from: no favorites
    of the add/remove customers (and no stored events), the arriving listeners offline,
    the toggling listeners online and available. Then VACUUM ANALYZE what changed (no
    autovacuum on the bench database)."""
    arriving, toggling = arrivals(data)
    time.sleep(0.5)  # the requests wrk left in flight when it stopped
    with psycopg.connect(url, autocommit=True) as conn:
        if name == "favorites_add_remove":
            conn.execute("delete from favorites where user_id = any(%s)",
                         (data.free_customer_ids[:20_000],))
            conn.execute("delete from feed_events")
            tables = ("favorites", "feed_events", "users")
        else:
            users, online = ([user for users in arriving for user in users], False) \
                if name == "comes_online" else (toggling, True)
            # Rows locked in id order, as the service's batches lock them: requests wrk
            # left in flight may still be writing (waited for, not deadlocked with).
            conn.execute("update user_status set is_online = %s, is_busy = false, "
                         "wait_time = null, busy_since = null, last_seen = now() at time "
                         "zone 'utc' - interval '1 day' * (not %s)::int "
                         "where user_id in (select user_id from user_status where "
                         "user_id = any(%s) order by user_id for update)",
                         (online, online, users))
            tables = ("user_status",)
        for table in tables:
            conn.execute(f"vacuum analyze {table}")


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def usage(pids, url):
    """CPU seconds of these processes and of the whole machine (busy), and the PostgreSQL
    sessions opened so far on the database: subtract two of these to get a run's usage."""
    with open("/proc/stat") as file:
        ticks = [int(value) for value in file.readline().split()[1:]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    with psycopg.connect(url) as conn:
        row = conn.execute("select sessions from pg_stat_database "
                           "where datname = current_database()").fetchone()
    return {"workers": sum(_cpu_seconds(pid) for pid in pids), "machine": busy,
            "sessions": row[0] if row else 0}


def usage_per_request(before, after, requests):
    """Milliseconds of CPU per request (workers, rest of the machine) and new PostgreSQL
    connections per 1,000 requests between two usage() snapshots."""
    workers = after["workers"] - before["workers"]
    rest = after["machine"] - before["machine"] - workers
    return {"worker_ms": 1000 * workers / requests, "other_ms": 1000 * rest / requests,
            "new_connections_per_1000": 1000 * (after["sessions"] - before["sessions"])
            / requests}


def find_wrk():
    """The wrk binary; installed from Debian's packages when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: apt-get install -y wrk")
        subprocess.run("apt-get update -qq && apt-get install -y -qq wrk", shell=True,
                       check=False, stdout=subprocess.DEVNULL, timeout=600)
        found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    return found


def run_wrk(script, port, file_path, threads, connections, seconds):
    """Run wrk once from its own process; return its parsed BENCH_RESULT and text."""
    command = [find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
               "--timeout", "10s", "-s", os.path.join(LUA, script),
               f"http://127.0.0.1:{port}/", "--", file_path, str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^BENCH_RESULT (\{.*\})$", done.stdout, re.M)
    if done.returncode != 0 or not match:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}"
                         f"{done.stdout[-500:]}")
    result = json.loads(match.group(1))
    if "span_us" in result:  # once.lua: each request once, timed from first send to last answer
        if not result["received"]:
            raise BenchError(f"no answer within {seconds} s")
        result["rps"] = result["received"] / (result["span_us"] / 1e6)
    else:
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect", "read", "write", "status",
                                               "timeout"))
    result["text"] = done.stdout[:match.start()].rstrip()
    return result
