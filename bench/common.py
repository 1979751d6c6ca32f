"""Shared bench helpers: paths, logging, the bench databases, tokens, the app's environment."""
import http.client
import json
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import jwt
import psycopg
from psycopg import sql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
RESULTS = os.path.join(BENCH, "results")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/saathii_bench"
JWT_SECRET = "saathii-bench-jwt-secret-0123456789abcdef"  # 41 characters
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RATE_LIMITS = ("RATELIMIT_HEARTBEAT", "RATELIMIT_FAVORITE_CHANGES", "RATELIMIT_PRESENCE_LOOKUPS",
               "RATELIMIT_FEED_CONNECTS")
HIGH_LIMIT = "1000000 per minute"


class BenchError(RuntimeError):
    """Something is broken: the run fails."""


def log(text):
    """Print a timestamped progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def libpq_url(url):
    """The URL as libpq reads it (no SQLAlchemy driver suffix, no postgres:// alias)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def with_database(url, name):
    """The same server URL with another database name."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def database_name(url):
    """The database a URL names."""
    return urlsplit(url).path.lstrip("/")


def check_database_url(url):
    """Refuse URLs the bench must not touch: it drops and recreates their schema."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        raise BenchError("the bench runs on PostgreSQL only (postgresql://...)")
    if parts.hostname not in LOOPBACK and parts.hostname is not None:
        raise BenchError(f"the database must be on this machine, not {parts.hostname}")
    name = database_name(url)
    if name == "test" or "bench" not in name:
        raise BenchError(f"refusing database {name!r}: the bench wipes its database, so "
                         "its name must contain 'bench' (default saathii_bench)")


def create_database(url):
    """Create the database if it is missing."""
    check_database_url(url)
    name = database_name(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True,
                         connect_timeout=10) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return
        log(f"creating database {name}")
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def reset_schema(url):
    """Drop everything in the public schema (a fresh start for every run)."""
    check_database_url(url)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("drop schema if exists public cascade")
        conn.execute("create schema public")


def app_env(database_url, **extra):
    """The environment of the service under test, as the Procfile's web process gets it."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"REDIS_URL", "REDIS_CHANNEL", "FLASK_APP", "FLASK_DEBUG",
                          "RATELIMIT_ENABLED", "RATELIMIT_STORAGE_URI"}}
    env.update({"DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET,
                "SAATHII_ENV": "production", "SCHEDULER_ENABLED": "false",
                "LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": env.get("WEB_CONCURRENCY", "2")})
    # The per-user rate limits stay on (their cost is measured) but far above what the
    # load sends each user, so that no request is refused.
    env.update({name: HIGH_LIMIT for name in RATE_LIMITS})
    env.update({key: str(value) for key, value in extra.items()})
    return env


def migrate(urls, timeout=300):
    """`flask --app wsgi db upgrade` on each database, all at once."""
    processes = [subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT,
        env=app_env(url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL) for url in urls]
    for url, process in zip(urls, processes):
        output, _ = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise BenchError(f"flask db upgrade failed on {database_name(url)}:\n{output}")


def token(user_id, expires_in=6 * 3600):
    """An access token as the Saathii auth service mints it, for the bench secret."""
    now = datetime.now(timezone.utc)
    return jwt.encode({"sub": str(user_id), "type": "access", "iat": now,
                       "exp": now + timedelta(seconds=expires_in)}, JWT_SECRET,
                      algorithm="HS256")


def children(pid):
    """The ids of the processes whose parent is pid (gunicorn's workers, say)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # the field after the ")" that ends the command name: state, then ppid
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def cpu_seconds(pids):
    """The user and system CPU seconds the processes have used (those gone count 0)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def timed_request(port, method, path, token=None, body=None, conn=None):
    """One request to 127.0.0.1:port, on `conn` (kept alive) or a new connection: (the
    connection to go on with, or None after an error; the status, or the error's name;
    seconds; Retry-After)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    started = time.perf_counter()
    try:
        conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        response = conn.getresponse()
        response.read()
        return (conn, response.status, time.perf_counter() - started,
                response.getheader("Retry-After"))
    except OSError as err:
        return None, err.__class__.__name__, time.perf_counter() - started, None


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def raise_fd_limit():
    """Raise the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stamp():
    """A timestamp for file names."""
    return time.strftime("%Y%m%d-%H%M%S")


class ClientProcess:
    """A client process of a bench script (its own gevent loop), spoken to with JSON
    lines: `first_line` goes in, then it must say `ready`."""

    def __init__(self, command, first_line, ready_timeout=30):
        self.process = subprocess.Popen(command, cwd=BENCH, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(first_line)
        self.expect("ready", ready_timeout)

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"event": "exit"})

    def send(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, event, timeout):
        """The next message, which must be `event`."""
        try:
            message = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"client {self.process.pid}: no {event} in {timeout:.0f} s")
        if message["event"] != event:
            raise BenchError(f"client {self.process.pid}: {message['event']} instead of {event}")
        return message

    def cpu_seconds(self):
        return cpu_seconds([self.process.pid])

    def stop(self):
        try:
            self.send("close")
            self.process.stdin.close()
            self.process.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
