"""Feed fan-out: one listener's presence change, made through REST, must reach every feed
socket subscribed to that listener; measures the delay from the REST call to each receipt.

Run by bench/run.py against a running service (gevent client, one process):
    python bench/feed_fanout.py --port P --listener ID --listener-token T --tokens FILE
FILE has one `USER_ID<TAB>TOKEN` line per socket. Prints one JSON line; exits 1 when a
socket failed to open or missed an event. Only 127.0.0.1 is contacted.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
import simple_websocket  # noqa: E402

class WebSocketClient(simple_websocket.Client):
    """simple-websocket's client, keeping frames that arrive with the handshake response
    (as tests/sockets.py does: the greeting would otherwise wait for more data)."""

    def handshake(self):
        super().handshake()
        self._handle_events()


class Watcher:
    """One feed socket subscribed to the listener, recording when each event arrives."""

    def __init__(self, port, user_id, tok, listener_id):
        self.url = f"ws://127.0.0.1:{port}/ws/feed?token={tok}"
        self.user_id, self.listener_id = user_id, listener_id
        self.ws, self.arrivals = None, {}

    def open(self, timeout=30):
        """Connect, read the greeting, subscribe, and wait for the confirmation."""
        with gevent.Timeout(timeout, TimeoutError("open and subscribe timed out")):
            self.ws = WebSocketClient.connect(self.url)
            hello = json.loads(self.ws.receive())
            if hello["type"] != "connection_established":
                raise ValueError(f"unexpected greeting {hello}")
            self.ws.send(json.dumps({"type": "subscribe", "user_ids": [self.listener_id]}))
            while json.loads(self.ws.receive())["type"] != "subscription_confirmed":
                pass

    def listen(self, rnd):
        """Record when this round's presence event about the listener arrives."""
        try:
            while True:
                raw = self.ws.receive()
                arrived = time.perf_counter()
                if raw is None:
                    return
                msg = json.loads(raw)
                if msg["type"] == rnd.expected and msg["data"]["user_id"] == self.listener_id \
                        and rnd.number not in self.arrivals:
                    self.arrivals[rnd.number] = arrived
                    rnd.hit()
        except simple_websocket.ConnectionClosed:
            return


class Round:
    """The presence change under way: its event type, and how many sockets got it."""

    def __init__(self, goal):
        self.number, self.expected, self.goal = -1, None, goal
        self.count, self.done = 0, gevent.event.Event()

    def start(self, number):
        """Expect the next change: busy on even rounds, available again on odd ones."""
        self.number, self.count = number, 0
        self.expected = "listener_busy" if number % 2 == 0 else "listener_available"
        self.done.clear()

    def hit(self):
        self.count += 1
        if self.count >= self.goal:
            self.done.set()


def put_status(port, tok, body):
    """PUT /both/status/me as the listener; return seconds taken."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("PUT", "/both/status/me", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {tok}",
                          "Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"PUT /both/status/me answered {response.status}: {payload[:200]}")
    return time.perf_counter() - started


def percentile(values, p):
    """The p-th percentile (nearest rank) of a list of numbers."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]


def main():
    """Open the sockets, make the presence changes, report delivery latencies."""
    parser = argparse.ArgumentParser()
    for name in ("--port", "--listener"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--listener-token", required=True)
    parser.add_argument("--tokens", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    with open(args.tokens) as file:
        users = [line.rstrip("\n").split("\t") for line in file if line.strip()]

    put_status(args.port, args.listener_token, {"is_online": True, "is_busy": False})
    watchers = [Watcher(args.port, int(uid), tok, args.listener) for uid, tok in users]
    errors, started = [], time.perf_counter()

    def open_one(watcher):
        try:
            watcher.open()
        except Exception as err:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(err).__name__}: {err}"[:200])
            watcher.ws = None

    pool = gevent.pool.Pool(100)
    pool.map(open_one, watchers)
    open_seconds = time.perf_counter() - started
    opened = [w for w in watchers if w.ws is not None]
    rnd = Round(len(opened))
    listeners = [gevent.spawn(w.listen, rnd) for w in opened]

    latencies, rest, missing = [], [], 0
    for number in range(args.rounds):
        rnd.start(number)
        sent_at = time.perf_counter()
        rest.append(put_status(args.port, args.listener_token, {"is_busy": number % 2 == 0}))
        rnd.done.wait(args.timeout)
        for watcher in opened:
            if number in watcher.arrivals:
                latencies.append(watcher.arrivals[number] - sent_at)
            else:
                missing += 1
        gevent.sleep(0.2)

    gevent.killall(listeners, timeout=5)
    for watcher in opened:
        try:
            watcher.ws.close()
        except Exception:  # noqa: BLE001 - already closed
            pass
    ms = [value * 1000 for value in latencies]
    result = {
        "sockets": len(watchers), "opened": len(opened), "open_seconds": open_seconds,
        "rounds": args.rounds, "expected": len(opened) * args.rounds,
        "delivered": len(latencies), "missing": missing + (len(watchers) - len(opened))
        * args.rounds, "open_errors": errors[:5],
        "p50_ms": percentile(ms, 50) if ms else None,
        "p99_ms": percentile(ms, 99) if ms else None,
        "max_ms": max(ms) if ms else None,
        "rest_ms_median": statistics.median(rest) * 1000,
    }
    print(json.dumps(result))
    return 0 if result["missing"] == 0 and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
