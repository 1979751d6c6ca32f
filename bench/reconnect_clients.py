"""The processes bench/reconnects.py starts: socket clients and a favorite writer.

    python bench/reconnect_clients.py --client --mode connect|storm --port P ...
    python bench/reconnect_clients.py --writer --rate R

A client process (gevent) reads its users from stdin, then commands, one JSON a line, and
answers each on stdout; the writer commits favorite changes through the service's own
code until stdin closes. Only bench/reconnects.py runs them.
"""
import sys

if "--client" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

FAVORITE_TYPES = {"favorite_added", "favorite_removed"}


def client_main(args):
    """One client process: reads its users from stdin, then commands, one JSON a line."""
    import gevent
    import gevent.lock
    import gevent.pool
    from gevent.fileobject import FileObjectPosix

    from wsclient import Closed, Rejected, WebSocket

    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)

    def say(**fields):
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def command():
        line = stdin.readline()
        return line.decode().strip() if line else "close"

    users = json.loads(stdin.readline())  # [[user_id, token], ...]
    errors = collections.Counter()
    retries = collections.Counter()  # reconnect attempts the restart refused: expected
    held = []

    def describe(err):
        return f"{type(err).__name__}: {str(err)[:100]}"

    def greet(ws, user_id):
        hello = json.loads(ws.receive())
        if hello.get("type") != "connection_established" or \
                hello["data"].get("user_id") != user_id:
            raise ValueError(f"unexpected greeting {str(hello)[:100]}")
        return hello["data"]

    say(event="ready")
    if command() != "go":
        return

    if args.mode == "connect":
        latencies = []

        def connect_one(user_id, tok):
            started = time.perf_counter()
            try:
                with gevent.Timeout(30, TimeoutError("no greeting in 30 s")):
                    ws = WebSocket.connect(args.port, f"/ws/feed?token={tok}")
                    greet(ws, user_id)
                latencies.append(time.perf_counter() - started)
                held.append(ws)
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors[describe(err)] += 1

        pool = gevent.pool.Pool(args.concurrency)
        started = time.time()
        for user_id, tok in users:
            pool.spawn(connect_one, user_id, tok)
        pool.join()
        say(event="connected", started=started, finished=time.time(),
            latencies=latencies, errors=errors)
        command()
        for ws in held:
            ws.close()
        return

    # storm: hold every socket, reconnect with since after a 1012, record the event ids
    state = {}
    back = {"count": 0, "announced": False}

    def hold(user_id, tok):
        record = state[user_id] = {"start": None, "ids": [], "greetings": [], "closes": []}
        cursor, attempt = None, 0
        while True:
            path = f"/ws/feed?token={tok}" + (f"&since={cursor}" if cursor is not None else "")
            try:
                if cursor is None:  # the first opening is paced; reconnects are not
                    with opening:
                        ws = WebSocket.connect(args.port, path, timeout=30)
                        data = greet(ws, user_id)
                else:
                    ws = WebSocket.connect(args.port, path, timeout=30)
                    data = greet(ws, user_id)
            except (OSError, Rejected, Closed) as err:
                if record["closes"]:  # the restarting server: try again shortly
                    retries[type(err).__name__ if isinstance(err, OSError)
                            else describe(err)] += 1
                    # the console's policy (saathii/static/console/feed.js), from a
                    # smaller first step: doubling, capped, half of it random
                    attempt += 1
                    ceiling = min(args.backoff_cap, args.backoff * 2 ** (attempt - 1))
                    gevent.sleep(ceiling / 2 + random.random() * ceiling / 2)
                    continue
                errors[describe(err)] += 1
                return
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors[describe(err)] += 1
                return
            record["greetings"].append(time.time())
            attempt = 0
            if cursor is None:
                cursor = record["start"] = data["last_event_id"] or 0
            if data.get("cursor_reset"):
                errors["cursor_reset in a greeting"] += 1
            if len(record["greetings"]) == 2:
                back["count"] += 1
                if back["count"] == len(users):
                    say(event="all_back", time=time.time())
            try:
                while True:
                    msg = json.loads(ws.receive())
                    if msg.get("type") in FAVORITE_TYPES:
                        record["ids"].append(msg["id"])
                        cursor = max(cursor, msg["id"])
            except Closed as closed:
                record["closes"].append([time.time(), closed.code])
                if closed.code != 1012:
                    errors[f"closed with {closed.code} {closed.reason}"] += 1
                    if closed.code is not None:
                        return
                advised = re.search(r"reconnect in (\d+) ms", closed.reason)
                if advised:  # as docs/api.md asks: come back when the server said
                    gevent.sleep(int(advised.group(1)) / 1000)
            except Exception as err:  # noqa: BLE001 - counted and reported
                errors[describe(err)] += 1
                return
            finally:
                ws.close()

    opening = gevent.lock.BoundedSemaphore(args.concurrency)
    started = time.time()
    greenlets = [gevent.spawn(hold, user_id, tok) for user_id, tok in users]
    while sum(1 for r in state.values() if r["greetings"]) + sum(errors.values()) < len(users):
        gevent.sleep(0.05)
        if all(g.dead for g in greenlets):
            break
    say(event="opened", seconds=time.time() - started,
        greeted=sum(1 for r in state.values() if r["greetings"]), errors=errors)
    while command() == "report":
        say(event="report", users=state, errors=errors, retries=retries)
    gevent.killall(greenlets, block=False)


def writer_main(args):
    """Favorite add, then remove, of random (customer, listener) pairs at about
    --rate events a second, through the service's own code, until stdin closes."""
    from wsgi import app
    from saathii.domain import favorite_changes
    from saathii.domain.favorites import ADDED, REMOVED

    pairs = json.loads(sys.stdin.readline())
    customers, listeners = pairs["customers"], pairs["listeners"]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    rng, done, failed = random.Random(5), 0, 0
    print(json.dumps({"event": "started"}), flush=True)
    with app.app_context():
        while not stop.is_set():
            customer, listener = rng.choice(customers), rng.choice(listeners)
            for kind in (ADDED, REMOVED):
                try:
                    favorite_changes.commit(kind, customer, listener)
                    done += 1
                except Exception:  # noqa: BLE001 - counted; the check tells what was stored
                    failed += 1
            time.sleep(2 / args.rate)
        time.sleep(1)  # let the relay's publisher thread send what is queued
    print(json.dumps({"event": "stopped", "committed": done, "failed": failed}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", action="store_true", help="a socket client process")
    parser.add_argument("--writer", action="store_true", help="the favorite writer")
    parser.add_argument("--mode", choices=["connect", "storm"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backoff", type=float, default=0.1)
    parser.add_argument("--backoff-cap", type=float, default=5)
    parser.add_argument("--rate", type=float, default=200)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    if args.writer:
        return writer_main(args)
    parser.error("--client or --writer")


if __name__ == "__main__":
    sys.exit(main())
