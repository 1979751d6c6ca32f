"""How many idle feed sockets one gunicorn web process holds, and the memory per socket.

    python bench/feed_sockets.py --sockets 5000 [--database-url URL] [--redis-url URL]

Starts the Procfile's web process (`gunicorn -c gunicorn.conf.py wsgi:app`, gevent
worker) with WEB_CONCURRENCY=1 on a free port, opens --sockets feed sockets to it from
this process (gevent greenlets, one distinct user per socket where there are enough
users), waits for each socket's connection_established greeting, lets them idle, and
reads the worker's VmRSS before and after. Then pings a sample of sockets (each must
answer pong), closes everything and stops gunicorn. Only 127.0.0.1 is contacted.

The database (default postgresql://postgres@127.0.0.1:5432/saathii_bench) is created
when missing, migrated with `flask db upgrade`, and given the bench users it lacks
(bench_user_000001, ...); the database named `test` is refused. gunicorn's output goes
to bench/results/ (git-ignored).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import jwt  # noqa: E402
import psycopg  # noqa: E402
import simple_websocket  # noqa: E402
from psycopg import sql  # noqa: E402
from wsproto.events import AcceptConnection, RejectConnection, Request  # noqa: E402

from common import children, free_port, libpq_url, log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/saathii_bench"
JWT_SECRET = "saathii-bench-jwt-secret-0123456789abcde"  # 40 characters
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
USERNAME = "bench_user_{:06d}"




# --------------------------------------------------------------------------- database



def check_loopback(url, what):
    host = urlsplit(url).hostname
    if host is not None and host not in LOOPBACK:
        sys.exit(f"{what} must be on this machine (127.0.0.1), not {host}")


def prepare_database(url):
    """Create the database if missing; refuse `test`."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        sys.exit("only PostgreSQL database URLs are supported")
    name = parts.path.lstrip("/")
    if not name or name == "test":
        sys.exit(f"refusing database {name!r}: use a database of its own (default saathii_bench)")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            log(f"creating database {name}")
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def app_env(database_url, **extra):
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET,
           "SAATHII_ENV": "testing", "SCHEDULER_ENABLED": "false", "LOG_LEVEL": "WARNING"}
    env.pop("REDIS_URL", None)
    env.update({key: str(value) for key, value in extra.items()})
    return env


def flask(database_url, *args, timeout=300):
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                            env=app_env(database_url), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        sys.exit(f"flask {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def bench_users(database_url, count):
    """Ids of `count` active bench users, importing the missing ones."""
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        existing = {name for (name,) in conn.execute(
            r"select username from users where username like 'bench\_user\_%'")}
    missing = [USERNAME.format(i) for i in range(1, count + 1)
               if USERNAME.format(i) not in existing]
    if missing:
        log(f"importing {len(missing)} bench users")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump([{"username": name, "role": "customer"} for name in missing], file)
        try:
            flask(database_url, "users", "import", file.name, timeout=600)
        finally:
            os.unlink(file.name)
    with psycopg.connect(database_url, connect_timeout=10) as conn:
        ids = [user_id for (user_id,) in conn.execute(
            "select id from users where username = any(%s) and is_active order by id",
            ([USERNAME.format(i) for i in range(1, count + 1)],))]
    if len(ids) < count:
        sys.exit(f"expected {count} active bench users, found {len(ids)}")
    return ids


def token(user_id, expires_in=4 * 3600):
    now = datetime.now(timezone.utc)
    return jwt.encode({"sub": str(user_id), "type": "access", "iat": now,
                       "exp": now + timedelta(seconds=expires_in)}, JWT_SECRET, algorithm="HS256")


# --------------------------------------------------------------------------- processes

def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)






def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def rss_by_mapping(pid):
    """The worker's resident memory (KiB) by kind of mapping: glibc's main heap
    ([heap]), anonymous mappings (pymalloc's arenas, glibc's large blocks and other
    arenas), files (code and libraries), and the rest."""
    kinds = collections.Counter()
    kind = "other"
    with open(f"/proc/{pid}/smaps") as file:
        for line in file:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                name = fields[5] if len(fields) > 5 else ""
                kind = ("heap" if name == "[heap]" else "anonymous" if not name
                        else "files" if name.startswith("/") else "other")
            elif fields[0] == "Rss:":
                kinds[kind] += int(fields[1])
    return dict(kinds)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# --trace-memory: the Procfile's gunicorn settings, and a worker that traces its Python
# allocations (tracemalloc, from its start) and, on SIGUSR2, writes one line of JSON to
# the trace file: the memory traced now, and the lines that grew most since the first.
TRACE_CONFIG = """
import gc, json, os, signal, tracemalloc
exec(compile(open("gunicorn.conf.py").read(), "gunicorn.conf.py", "exec"))
timeout = 300  # a snapshot of a large heap holds the worker for many seconds
_procfile_post_worker_init = post_worker_init
_first = []


def post_worker_init(worker):
    import gevent
    _procfile_post_worker_init(worker)

    def dump():
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        if not _first:
            _first.append(snapshot)
        grown = snapshot.compare_to(_first[0], "lineno")[:12]
        with open(os.environ["SAATHII_BENCH_TRACE"], "a") as file:
            file.write(json.dumps({"traced_mib": tracemalloc.get_traced_memory()[0] / 2**20,
                                   "grown": [[str(stat.traceback[0]), stat.size_diff / 2**20,
                                              stat.count_diff] for stat in grown]}) + "\\n")

    gevent.signal_handler(signal.SIGUSR2, dump)
"""


def trace_dump(worker, path, label):
    """Have the tracing worker write its allocations; return what it wrote (or None)."""
    before = os.path.getsize(path) if os.path.exists(path) else 0
    os.kill(worker, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > before:
            with open(path) as file:
                file.seek(before)
                line = file.readline()
            if line.endswith("\n"):
                found = json.loads(line)
                log(f"traced Python memory {label}: {found['traced_mib']:.1f} MiB")
                return found
        gevent.sleep(0.2)
    log(f"WARNING: the worker wrote no allocation trace {label}")
    return None


def start_gunicorn(database_url, redis_url, port, log_file, trace=None):
    extra = {"PORT": port, "WEB_CONCURRENCY": 1}
    if redis_url:
        extra.update(REDIS_URL=redis_url, REDIS_CHANNEL=f"saathii:bench:{uuid.uuid4().hex}")
    config = "gunicorn.conf.py"
    if trace is not None:
        config = trace + ".conf.py"
        with open(config, "w") as file:
            file.write(TRACE_CONFIG)
        extra.update(PYTHONTRACEMALLOC=1, SAATHII_BENCH_TRACE=trace)
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", config, "wsgi:app"], cwd=ROOT,
        env=app_env(database_url, **extra), stdout=log_file, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)


def wait_for_worker(process, port, timeout=60):
    """Wait until the port accepts and the master has exactly one worker; return its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early with code {process.returncode}")
        with socket.socket() as probe:
            probe.settimeout(1)
            listening = probe.connect_ex(("127.0.0.1", port)) == 0
        workers = children(process.pid)
        if listening and len(workers) == 1:
            return workers[0]
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not listen on {port} with one worker within {timeout}s")


def stop_process(process, timeout=30):
    if process.poll() is not None:
        return process.returncode
    process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(10)


# --------------------------------------------------------------------------- sockets

RAW_SOCKETS = []  # every client socket that got as far as the handshake, to close at the end


class WebSocketClient(simple_websocket.Client):
    """simple-websocket's client handshake, with two changes: a peer that closes during
    the handshake raises instead of spinning on recv() returning b"", and frames that
    arrive with the handshake response (the greeting) are handled at once, as
    tests/sockets.py's WebSocketClient does (they would otherwise wait for more data)."""

    def handshake(self):
        RAW_SOCKETS.append(self.sock)
        self.sock.send(self.ws.send(Request(host=self.host, target=self.path,
                                            subprotocols=self.subprotocols,
                                            extra_headers=self.extra_headeers)))
        event = None
        while event is None:
            data = self.sock.recv(self.receive_bytes)
            if not data:
                raise ConnectionError("closed by the server during the handshake")
            self.ws.receive_data(data)
            event = next(self.ws.events(), None)
        if isinstance(event, RejectConnection):
            raise ConnectionError(f"handshake rejected with HTTP {event.status_code}")
        if not isinstance(event, AcceptConnection):
            raise ConnectionError(f"unexpected handshake answer {type(event).__name__}")
        self.subprotocol = event.subprotocol
        self.connected = True
        self.connected = self._handle_events()


class Opened:
    def __init__(self, ws, user_id):
        self.ws = ws
        self.user_id = user_id


def open_socket(port, user_id, timeout):
    """Open one feed socket and read its greeting; return an Opened or raise."""
    url = f"ws://127.0.0.1:{port}/ws/feed?token={token(user_id)}"
    deadline = time.monotonic() + timeout
    with gevent.Timeout(timeout, TimeoutError("connect and handshake timed out")):
        ws = WebSocketClient.connect(url)
    try:
        raw = ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if raw is None:
            raise TimeoutError("no greeting" if ws.connected else "closed before the greeting")
        hello = json.loads(raw)
        if hello.get("type") != "connection_established" or \
                hello.get("data", {}).get("user_id") != user_id:
            raise ValueError(f"unexpected greeting {raw[:200]}")
    except BaseException:
        close_quietly(ws)
        raise
    return Opened(ws, user_id)


def close_quietly(ws):
    try:
        ws.close()
    except Exception:  # noqa: BLE001 - already closed
        pass


def describe(err):
    text = str(err).splitlines()[0][:120] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def open_all(port, user_ids, count, concurrency, timeout, deadline_seconds):
    """Open `count` sockets with `concurrency` at a time; return (opened, errors, seconds)."""
    opened, errors = [], collections.Counter()
    pool = gevent.pool.Pool(concurrency)
    progress = {"done": 0}

    def one(index):
        try:
            opened.append(open_socket(port, user_ids[index % len(user_ids)], timeout))
        except Exception as err:  # noqa: BLE001 - counted and reported
            errors[describe(err)] += 1
        progress["done"] += 1
        if progress["done"] % 1000 == 0:
            log(f"  {progress['done']}/{count} attempted, {len(opened)} held, "
                f"{sum(errors.values())} failed")

    started = time.monotonic()
    for index in range(count):
        if time.monotonic() - started > deadline_seconds:
            errors[f"not attempted: open phase exceeded {deadline_seconds}s"] += count - index
            break
        pool.spawn(one, index)
    left = max(1.0, deadline_seconds - (time.monotonic() - started) + timeout)
    if not pool.join(timeout=left):
        pool.kill(block=True, timeout=10)
        errors["killed: open phase did not finish in time"] += 1
    return opened, errors, time.monotonic() - started


def ping(opened, timeout=10):
    """Send a ping; skip other messages (a presence event); True when a pong arrives."""
    ws = opened.ws
    deadline = time.monotonic() + timeout
    try:
        ws.send(json.dumps({"type": "ping"}))
        while time.monotonic() < deadline:
            raw = ws.receive(timeout=max(0.05, deadline - time.monotonic()))
            if raw is None:
                return False
            if json.loads(raw).get("type") == "pong":
                return True
    except Exception:  # noqa: BLE001 - a dead socket fails the check
        return False
    return False


def close_all(opened, timeout=60):
    pool = gevent.pool.Pool(500)
    for item in opened:
        pool.spawn(close_quietly, item.ws)
    pool.join(timeout=timeout)
    pool.kill(block=True, timeout=5)
    for sock in RAW_SOCKETS:
        try:
            sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=5000, help="feed sockets to open")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=None, help="REDIS_URL for the web process")
    parser.add_argument("--users", type=int, default=None,
                        help="distinct users (default: one per socket, at most 10000)")
    parser.add_argument("--concurrency", type=int, default=100, help="sockets opening at once")
    parser.add_argument("--connect-timeout", type=float, default=30,
                        help="seconds for one socket to connect and be greeted")
    parser.add_argument("--idle", type=float, default=5, help="idle seconds before measuring")
    parser.add_argument("--ping-sample", type=int, default=100)
    parser.add_argument("--after-close", type=float, default=0,
                        help="seconds to wait after closing every socket, then measure "
                             "the worker's memory again (0: not measured)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="trace the worker's Python allocations (tracemalloc: slower, "
                             "more memory) and report the lines holding memory")
    args = parser.parse_args()
    if args.sockets < 1:
        parser.error("--sockets must be positive")
    database_url = libpq_url(args.database_url)
    check_loopback(database_url, "the database")
    if args.redis_url:
        check_loopback(args.redis_url, "Redis")
    users = args.users or min(args.sockets, 10000)

    soft, hard = raise_fd_limit()  # before gunicorn starts: it inherits the limit
    log(f"file descriptor limit {soft} (hard {hard})")
    if args.sockets + 100 > soft:
        log(f"WARNING: {args.sockets} sockets need more descriptors than the limit {soft}")

    prepare_database(database_url)
    log("migrating (flask db upgrade)")
    flask(database_url, "db", "upgrade")
    user_ids = bench_users(database_url, users)
    log(f"{len(user_ids)} users ready")

    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = os.path.join(RESULTS, f"gunicorn-{stamp}-{args.sockets}.log")
    port = free_port()
    results, opened, errors = {}, [], collections.Counter()
    with open(log_path, "w") as log_file:
        trace = os.path.join(RESULTS, f"trace-{stamp}") if args.trace_memory else None
        traces = {}
        process = start_gunicorn(database_url, args.redis_url, port, log_file, trace)
        try:
            worker = wait_for_worker(process, port)
            log(f"gunicorn master {process.pid}, worker {worker}, port {port}; "
                f"worker fd limit {worker_fd_limit(worker)}")
            rss_cold = status_kib(worker, "VmRSS")
            # Warm up: the first sockets import and set up what every later one reuses.
            warm, _, _ = open_all(port, user_ids, 20, 10, args.connect_timeout, 60)
            close_all(warm, timeout=10)
            gevent.sleep(2)
            rss_before = status_kib(worker, "VmRSS")
            fds_before = fd_count(worker)
            if trace:
                traces["warm"] = trace_dump(worker, trace, "warm")
            log(f"worker RSS {rss_cold} KiB cold, {rss_before} KiB after warm-up; "
                f"opening {args.sockets} sockets, {args.concurrency} at a time")

            open_deadline = max(120.0, args.sockets / 20)
            opened, errors, open_seconds = open_all(
                port, user_ids, args.sockets, args.concurrency, args.connect_timeout,
                open_deadline)
            log(f"opened {len(opened)} in {open_seconds:.1f}s; idling {args.idle}s")
            gevent.sleep(args.idle)
            rss_after = status_kib(worker, "VmRSS")
            hwm = status_kib(worker, "VmHWM")
            fds_after = fd_count(worker)
            alive = sum(1 for item in opened if item.ws.connected)

            sample = random.sample(opened, min(args.ping_sample, len(opened)))
            ping_started = time.monotonic()
            pool = gevent.pool.Pool(20)
            greenlets = [pool.spawn(ping, item) for item in sample]
            pool.join(timeout=60)
            pool.kill(block=True, timeout=5)
            answers = [bool(g.value) for g in greenlets]
            ping_seconds = time.monotonic() - ping_started
            alive_after_ping = sum(1 for item in opened if item.ws.connected)

            held = len(opened)
            growth = rss_after - rss_before
            results = {
                "sockets requested": args.sockets,
                "sockets held (greeted)": held,
                "failed to open": sum(errors.values()),
                "distinct users": min(len(user_ids), args.sockets),
                "time to open": f"{open_seconds:.1f} s ({held / open_seconds:.0f}/s)"
                                if open_seconds else "-",
                "worker RSS cold / warm / with sockets":
                    f"{rss_cold / 1024:.1f} / {rss_before / 1024:.1f} / {rss_after / 1024:.1f} MiB",
                "worker peak RSS (VmHWM)": f"{hwm / 1024:.1f} MiB",
                "RSS growth": f"{growth / 1024:.1f} MiB",
                "RSS per socket": f"{growth / held:.1f} KiB" if held else "-",
                "worker fds before / after": f"{fds_before} / {fds_after}",
                "client sockets still connected": f"{alive} idle, {alive_after_ping} after pings",
                "ping sample answered pong": f"{sum(answers)}/{len(sample)} "
                                             f"in {ping_seconds:.1f} s",
            }
            if trace:
                traces["held"] = trace_dump(worker, trace, "with the sockets")
            if args.after_close:
                by_kind_open = rss_by_mapping(worker)
                close_all(opened)
                opened = []
                log(f"closed every socket; waiting {args.after_close:g}s")
                gevent.sleep(args.after_close)
                rss_closed = status_kib(worker, "VmRSS")
                by_kind = rss_by_mapping(worker)
                results["worker RSS a while after closing"] = (
                    f"{rss_closed / 1024:.1f} MiB after {args.after_close:g} s "
                    f"({(rss_closed - rss_before) / max(rss_before, 1):+.0%} of warm)")
                results["RSS by mapping, held / closed (MiB)"] = ", ".join(
                    f"{kind} {by_kind_open.get(kind, 0) / 1024:.0f} / "
                    f"{by_kind.get(kind, 0) / 1024:.0f}"
                    for kind in ("heap", "anonymous", "files", "other"))
                if trace:
                    traces["closed"] = trace_dump(worker, trace, "after closing")
            for label, found in traces.items():
                if found:
                    results[f"Python memory traced, {label}"] = f"{found['traced_mib']:.1f} MiB"
            if traces.get("closed") or traces.get("held"):
                final = traces.get("closed") or traces["held"]
                log("lines whose allocations grew most since warm-up (MiB, objects):")
                for where, mib, count in final["grown"]:
                    log(f"  {mib:+8.2f} {count:+8d}  {where}")
        finally:
            close_all(opened)
            code = stop_process(process)
            log(f"gunicorn stopped (exit code {code}); its output: {log_path}")

    report(results, errors, log_path, args)
    ok = results and results["sockets held (greeted)"] == args.sockets and \
        results["ping sample answered pong"].startswith(f"{min(args.ping_sample, args.sockets)}/")
    return 0 if ok else 1


def worker_fd_limit(pid):
    with open(f"/proc/{pid}/limits") as file:
        for line in file:
            if line.startswith("Max open files"):
                return " / ".join(line.split()[3:5])
    return "?"


def gunicorn_problems(log_path, limit=15):
    """Lines of gunicorn's output that are not access log lines."""
    problems = collections.Counter()
    with open(log_path, errors="replace") as file:
        for line in file:
            line = line.rstrip()
            if not line or line.startswith("127.0.0.1 \"") or "] [INFO] " in line:
                continue
            problems[line[:200]] += 1
    return problems.most_common(limit)


def report(results, errors, log_path, args):
    print()
    print(f"## Idle feed sockets on one gunicorn gevent worker ({args.sockets} requested)")
    print()
    print("| measure | value |")
    print("|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    if errors:
        print()
        print("Open failures:")
        for text, count in errors.most_common(10):
            print(f"- {count} x {text}")
    problems = gunicorn_problems(log_path)
    if problems:
        print()
        print(f"gunicorn output other than access lines ({log_path}):")
        for text, count in problems:
            print(f"- {count} x {text}")


if __name__ == "__main__":
    sys.exit(main())
