"""Stuck and hostile clients against the Procfile's web command: other users' latency,
quiet and during each attack (issue #12: p99 within twice its quiet value).

    python bench/attacks.py [--seconds 15] [--database-url URL] [--smoke]

Seeds its own database (saathii_bench_attacks), starts gunicorn as the Procfile does (2
workers, PostgreSQL relay), runs a steady load of other users (status changes, heartbeats,
favorites list, presence look-ups) alone and then beside each attack, and prints their
p50 and p99 and errors per phase. Only 127.0.0.1 is contacted; every loop is bounded.
"""
import argparse
import json
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
import zlib

import psycopg
from wsproto import ConnectionType, WSConnection
from wsproto.events import Ping, Request, TextMessage

from common import (DEFAULT_DATABASE_URL, RESULTS, BenchError, create_database, libpq_url,
                    log, migrate, reset_schema, timed_request, token, with_database)
from server import Server

LISTENERS, CUSTOMERS, LOAD_THREADS = 100, 100, 8
# A surge of socket opens: 2,000 users, 200 handshakes at a time, up to SURGE_SOCKETS held.
SURGE_FIRST, SURGE_USERS, SURGE_IN_FLIGHT = 1001, 2000, 200
SURGE_SOCKETS = {"full": 12000, "smoke": 600}


def seed(url):
    """100 listeners (online) and 100 customers, each customer with 10 favorites."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for n in range(1, LISTENERS + CUSTOMERS + 1):
            role = "listener" if n <= LISTENERS else "customer"
            conn.execute("insert into users (id, username, role, is_active, interests, "
                         "created_at, favorites_version) values (%s, %s, %s, true, '[]', "
                         "now(), 0)", (n, f"{role}_{n}", role))
            conn.execute("insert into user_status (user_id, is_online, is_busy, last_seen, "
                         "created_at, updated_at, version) values (%s, %s, false, now(), "
                         "now(), now(), 1)", (n, role == "listener"))
        for customer in range(LISTENERS + 1, LISTENERS + CUSTOMERS + 1):
            for listener in range(1, 11):
                conn.execute("insert into favorites (user_id, listener_id, created_at) "
                             "values (%s, %s, now())", (customer, (customer + listener) % 100 + 1))
        # The surge's users (ids from SURGE_FIRST on), with no favorites.
        with conn.cursor().copy("COPY users (id, username, role, is_active, interests, "
                                "created_at, favorites_version) FROM STDIN") as copy:
            for n in range(SURGE_FIRST, SURGE_FIRST + SURGE_USERS):
                copy.write_row((n, f"surge_{n}", "customer", True, "[]", "now", 0))
        with conn.cursor().copy("COPY user_status (user_id, is_online, is_busy, last_seen, "
                                "created_at, updated_at, version) FROM STDIN") as copy:
            for n in range(SURGE_FIRST, SURGE_FIRST + SURGE_USERS):
                copy.write_row((n, False, False, "now", "now", "now", 1))
        conn.execute("select setval(pg_get_serial_sequence('users', 'id'), %s)",
                     (SURGE_FIRST + SURGE_USERS,))
        conn.execute("vacuum analyze")


class Load:
    """Other users, LOAD_THREADS at a time, each on a keep-alive connection."""

    def __init__(self, port):
        self.port, self.latencies, self.errors = port, [], []
        self.running = threading.Event()

    def run(self, seconds):
        self.latencies, self.errors = [], []
        self.running.set()
        threads = [threading.Thread(target=self._user, args=(n,)) for n in range(LOAD_THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        self.running.clear()
        for thread in threads:
            thread.join(30)
        ordered = sorted(self.latencies)
        return {"requests": len(ordered), "errors": len(self.errors),
                "error_kinds": sorted(set(self.errors))[:5],
                "p50_ms": round(statistics.median(ordered) * 1000, 1),
                "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 1)}

    def _user(self, n):
        listener, customer = 51 + n, LISTENERS + 51 + n  # not the attackers' accounts
        calls = [("PUT", "/both/status/me", listener, {"is_busy": True}),
                 ("PUT", "/both/status/me", listener, {"is_busy": False}),
                 ("POST", "/both/status/heartbeat", customer, None),
                 ("GET", "/favorites", customer, None),
                 ("GET", "/users/presence?user_ids=" + ",".join(map(str, range(1, 41))),
                  customer, None)]
        conn, i = None, 0
        while self.running.is_set():
            method, path, who, body = calls[i % len(calls)]
            i += 1
            conn, status, seconds, _ = timed_request(self.port, method, path, token(who),
                                                     body, conn)
            if status != 200:
                self.errors.append(f"{method} {path} {status}")
            self.latencies.append(seconds)


def upgrade(port, who, rcvbuf=None, extensions=False):
    """A raw feed socket (wsproto): (socket, connection)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    ws = WSConnection(ConnectionType.CLIENT)
    request = ws.send(Request(host=f"127.0.0.1:{port}", target=f"/ws/feed?token={token(who)}"))
    if extensions:
        request = request.replace(b"\r\n\r\n",
                                  b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    sock.sendall(request)
    ws.receive_data(sock.recv(4096))
    list(ws.events())  # the 101: the connection is open
    return sock, ws


def attack_loop(stop, step):
    """Run step() until stop is set, surviving the server closing the attacker."""
    while not stop.is_set():
        try:
            step()
        except OSError:
            time.sleep(0.05)


def in_threads(count, stop, step):
    """attack_loop(stop, step) in `count` threads at once, until stop is set."""
    threads = [threading.Thread(target=attack_loop, args=(stop, step)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def frozen_sockets(port, stop):
    """50 sockets watching every listener's presence, never reading."""
    held = []
    for n in range(50):
        sock, ws = upgrade(port, LISTENERS + 1 + n % 10, rcvbuf=2048)
        sock.sendall(ws.send(TextMessage(data='{"type": "subscribe", "subscription": "feed"}')))
        held.append(sock)
    stop.wait()
    for sock in held:
        sock.close()


def slow_bodies(port, stop):
    """80 status updates from one account, their bodies a byte every 2 s."""
    head = (f"PUT /both/status/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token(1)}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{").encode()

    def step():
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
        for sock in socks:
            sock.sendall(head)
        while not stop.wait(2):
            for sock in socks:
                sock.sendall(b" ")  # raises once the server gave up: start again
    attack_loop(stop, step)


def message_flood(port, stop):
    """Sockets sending valid 16 KB pings as fast as they can (reconnecting when closed)."""
    ping = json.dumps({"type": "ping", "data": "x" * 16000})

    def step():
        sock, ws = upgrade(port, 2)
        frame = ws.send(TextMessage(data=ping))
        while not stop.is_set():
            sock.sendall(frame)
    in_threads(10, stop, step)


def ping_frames(port, stop):
    """Four sockets sending protocol-level ping frames as fast as they can (reconnecting
    when closed): each costs a pong unless counted against the socket's budget."""
    def step():
        sock, ws = upgrade(port, 5)
        frames = ws.send(Ping(b"are you there")) * 100
        while not stop.is_set():
            sock.sendall(frames)
    in_threads(4, stop, step)


def compressed_bombs(port, stop):
    """Sockets offering permessage-deflate, each sending a 51 KB frame that inflates to
    50 MB (refused: compression is never negotiated)."""
    body = zlib.compressobj(wbits=-15)
    payload = body.compress(b'{"type":"ping","data":"' + b"x" * 50_000_000 + b'"}') + body.flush()
    mask = b"\x01\x02\x03\x04"
    frame = bytes([0xC1, 0xFF]) + len(payload).to_bytes(8, "big") + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))

    def step():
        sock, _ = upgrade(port, 3, extensions=True)
        sock.sendall(frame)
        sock.recv(4096)
        sock.close()
    attack_loop(stop, step)


def socket_pile(port, stop):
    """One user opening socket after socket, never closing one."""
    held = []

    def step():
        held.append(upgrade(port, 4)[0])
        if len(held) > 2000:
            held.pop(0).close()
    attack_loop(stop, step)
    for sock in held:
        sock.close()


def socket_surge(port, stop, sockets=SURGE_SOCKETS["full"]):
    """2,000 users opening sockets, SURGE_IN_FLIGHT handshakes at a time, each socket held
    (unread) until the phase ends: an evening's start, or every client back at once."""
    held, lock = [], threading.Lock()
    wanted = iter(range(sockets))

    def progress():
        started = time.monotonic()
        while not stop.wait(2):
            log(f"socket_surge: {len(held)} sockets held at {time.monotonic() - started:.0f} s")
    threading.Thread(target=progress, daemon=True).start()

    def opener():
        for n in wanted:
            if stop.is_set():
                return
            try:
                sock, _ = upgrade(port, SURGE_FIRST + n % SURGE_USERS)
            except Exception:  # noqa: BLE001 - refused (503) or reset: back off, as clients do
                time.sleep(0.5)
                continue
            with lock:
                held.append(sock)
    threads = [threading.Thread(target=opener) for _ in range(SURGE_IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.wait()
    for sock in held:
        sock.close()


ATTACKS = {"frozen_sockets": frozen_sockets, "slow_bodies": slow_bodies,
           "message_flood": message_flood, "ping_frames": ping_frames,
           "compressed_bombs": compressed_bombs,
           "socket_pile": socket_pile, "socket_surge": socket_surge}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--database-url", default=with_database(DEFAULT_DATABASE_URL,
                                                                "saathii_bench_attacks"))
    parser.add_argument("--smoke", action="store_true", help="3 s phases, no verdicts")
    parser.add_argument("--only", help="one attack (by name) beside the quiet phase")
    parser.add_argument("--redis-url", help="run the service with Redis (relay and counters)")
    args = parser.parse_args()
    seconds = 3 if args.smoke else args.seconds
    url = args.database_url
    create_database(url)
    reset_schema(url)
    migrate([url])
    seed(url)
    results = {}
    redis = {"REDIS_URL": args.redis_url} if args.redis_url else {}
    with Server("attacks", "wsgi:app", url, **redis) as server:
        load = Load(server.port)
        load.run(2)  # warm-up
        results["quiet"] = load.run(seconds)
        log(f"quiet: {results['quiet']}")
        for name, attack in ATTACKS.items():
            if args.only and name != args.only:
                continue
            kwargs = ({"sockets": SURGE_SOCKETS["smoke" if args.smoke else "full"]}
                      if attack is socket_surge else {})
            # Attackers in a process of their own: their work must not slow the load's
            # own measuring (one interpreter lock).
            stop = multiprocessing.Event()
            attacker = multiprocessing.Process(target=attack, args=(server.port, stop),
                                               kwargs=kwargs,
                                               daemon=True)
            attacker.start()
            time.sleep(1)  # the attack is under way
            results[name] = load.run(seconds)
            stop.set()
            attacker.join(30)
            if attacker.is_alive():
                attacker.kill()
            results[name]["p99_ratio"] = round(results[name]["p99_ms"]
                                               / results["quiet"]["p99_ms"], 2)
            log(f"{name}: {results[name]}")
        problems = server.problems()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "attacks.json"), "w") as file:
        json.dump(results, file, indent=2)
    print("| phase | requests | errors | p50 | p99 | p99 / quiet |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results.items():
        print(f"| {name} | {result['requests']} | {result['errors']} | {result['p50_ms']} ms "
              f"| {result['p99_ms']} ms | {result.get('p99_ratio', 1.0)} |")
    failed = [name for name, result in results.items() if result["errors"]]
    if problems:
        log("server log problems: " + " / ".join(problems))
    if failed or problems:
        raise SystemExit(f"other users saw errors during: {', '.join(failed) or 'none'}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as err:
        sys.exit(f"bench: {err}")
