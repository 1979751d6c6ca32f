"""Feed socket surges: distinct users connecting, and every socket reconnecting at once.

    python bench/reconnects.py [--smoke] [--database-url URL] [--redis-url URL]

1. Connect: the Procfile's web process; --sockets distinct users open a feed socket,
   --concurrency in flight, each counted when its connection_established greeting
   arrives; greeted sockets per second over the floor's requests per second (bench/floor.py
   under the same gunicorn command, wrk as bench/run.py drives it, in the same run).
2. Storm: --storm sockets of distinct listeners held across both workers (REDIS_URL set),
   a writer process committing favorite changes (each a stored event for one of those
   listeners) through the service's own code, the web process stopped with SIGTERM (it
   closes every feed socket with 1012) and started again on the same port; every client
   reconnects at once with `since` = the last event id it received. Measures the time from
   SIGTERM until every socket is greeted again, and checks that every event stored for
   those listeners after their first greeting was received exactly once.

The sockets are opened from --clients client processes (gevent, bench/wsclient.py), so
that the client is not the bottleneck: their CPU time is reported. Seeds its own
database (a fresh schema, COPY); exits non-zero on any error, lost or duplicated event,
never because of a figure. Only 127.0.0.1 is contacted.
"""
import argparse
import collections
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid

from common import (BENCH, DEFAULT_DATABASE_URL, RESULTS, ROOT, BenchError,
                    ClientProcess, app_env, create_database, libpq_url, log,
                    raise_fd_limit, stamp, token, with_database)
from common import cpu_seconds as worker_cpu

SIZES = {
    "full": {"users": 12_000, "listeners": 5_000, "heavy_favorites": 100,
             "light_customers": 5_000, "light_favorites": 20},
    "smoke": {"users": 700, "listeners": 200, "heavy_favorites": 20,
              "light_customers": 200, "light_favorites": 20},
}
CLIENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reconnect_clients.py")


def percentile(values, p):
    """The p-th percentile (nearest rank) of a list, or None."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class Client(ClientProcess):
    """A client process of this script."""

    def __init__(self, mode, port, users, concurrency, args):
        super().__init__([sys.executable, CLIENTS, "--client", "--mode",
                          mode, "--port", str(port), "--concurrency", str(concurrency),
                          "--backoff", str(args.backoff), "--backoff-cap",
                          str(args.backoff_cap)], json.dumps(users))


def split(items, parts):
    return [items[i::parts] for i in range(parts)]


# --------------------------------------------------------------------------- scenarios

def measure_floor(url, args, folder):
    """The floor's requests per second, as bench/run.py measures it."""
    from scenarios import run_wrk
    from server import Server

    path = os.path.join(folder, "floor.tsv")
    with open(path, "w") as file:
        file.writelines(f"GET\t/\t{token(u)}\t\n" for u in range(1, 2001))
    with Server("reconnects-floor", "floor:app", url, floor=True) as srv:
        if args.warmup:
            run_wrk("rotate.lua", srv.port, path, 2, 64, args.warmup)
        before = worker_cpu(srv.worker_pids())
        result = run_wrk("rotate.lua", srv.port, path, 2, 64, args.duration)
        result["worker_ms"] = 1000 * (worker_cpu(srv.worker_pids()) - before) / max(
            1, result["requests"])
    if result["errors"]:
        raise BenchError(f"floor: {result['errors']} errors")
    log(f"floor: {result['rps']:,.0f} req/s, {result['worker_ms']:.2f} ms of worker CPU each")
    return result


def user_tokens(ids):
    return [[user_id, token(user_id)] for user_id in ids]


def run_connect(url, data, args, floor):
    """Scenario 1: distinct users connecting, args.concurrency in flight."""
    from server import Server

    users = user_tokens(data.light_ids[:args.sockets])
    warm = user_tokens(data.free_customer_ids[:50])
    with Server("reconnects-connect", "wsgi:app", url) as srv:
        warmer = Client("connect", srv.port, warm, 10, args)  # imports, pools: not measured
        warmer.send("go")
        warmer.expect("connected", 60)
        warmer.stop()
        per = max(1, args.concurrency // args.clients)
        clients = [Client("connect", srv.port, part, per, args) for part in split(users, args.clients)]
        cpu_before = [c.cpu_seconds() for c in clients]
        workers_before = worker_cpu(srv.worker_pids())
        spies = spy(srv.worker_pids(), args, "connect")
        for client in clients:
            client.send("go")
        results = [client.expect("connected", 300) for client in clients]
        workers = worker_cpu(srv.worker_pids()) - workers_before
        client_cpu = sum(c.cpu_seconds() for c in clients) - sum(cpu_before)
        for process in spies:
            process.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            process.wait(60)
        for client in clients:
            client.stop()
        problems = srv.problems()
    seconds = max(r["finished"] for r in results) - min(r["started"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    errors = collections.Counter()
    for r in results:
        errors.update(r["errors"])
    rate = len(latencies) / seconds
    out = {"sockets": len(users), "greeted": len(latencies), "seconds": seconds,
           "rate": rate, "ratio": rate / floor["rps"], "p50_ms": 1000 * percentile(latencies, 50),
           "p99_ms": 1000 * percentile(latencies, 99), "errors": dict(errors),
           "client_cpu_s": client_cpu, "worker_cpu_s": workers, "server_log": problems,
           "worker_ms": 1000 * workers / max(1, len(latencies)),
           "cpu_ratio": floor["worker_ms"] / (1000 * workers / max(1, len(latencies)))}
    log(f"connect: {len(latencies)}/{len(users)} greeted in {seconds:.1f} s ({rate:.0f}/s, "
        f"ratio {out['ratio']:.2f}), p50 {out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms, "
        f"client CPU {client_cpu:.1f} s, workers CPU {workers:.1f} s, errors {dict(errors)}")
    return out


def spy(pids, args, name):
    """py-spy record on each worker (--spy): raw stacks in bench/results/."""
    if not args.spy:
        return []
    return [subprocess.Popen([args.spy, "record", "-r", "100", "-f", "raw", "-p", str(pid),
                              "-o", os.path.join(RESULTS, f"spy-{name}-{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid in pids]


def relaunch(srv):
    """Start the server's gunicorn again on its port, without waiting for it (the
    clients are already knocking); as bench/server.py's Server.start does."""
    with open(srv.log_path, "a") as errors:
        srv.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", srv.app],
            cwd=ROOT, env=srv.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=errors)


def wait_workers(srv, timeout=120):
    """The pids of the relaunched server's workers, once all are forked."""
    from common import children

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(srv.process.pid)
        if len(found) == srv.workers:
            return found
        if srv.process.poll() is not None:
            raise BenchError(f"the relaunched gunicorn exited with {srv.process.returncode}")
        time.sleep(0.05)
    raise BenchError(f"the relaunched gunicorn had no {srv.workers} workers in {timeout} s")


def stored_ids(url, user_ids):
    """Every stored event id of these users, by user."""
    import psycopg

    found = collections.defaultdict(list)
    with psycopg.connect(url) as conn:
        for user_id, event_id in conn.execute(
                "select user_id, id from feed_events where user_id = any(%s)", (user_ids,)):
            found[user_id].append(event_id)
    return found


def run_storm(url, data, args, floor):
    """Scenario 2: every socket of a graceful restart reconnecting with since."""
    from server import Server

    listeners = data.listener_ids[:args.storm]
    channel = f"saathii:bench:{uuid.uuid4().hex}"
    env = {"REDIS_URL": args.redis_url, "REDIS_CHANNEL": channel}
    srv = Server("reconnects-storm", "wsgi:app", url, **env)
    srv.start()
    clients, writer = [], None
    try:
        per = max(1, args.concurrency // args.clients)
        clients = [Client("storm", srv.port, part, per, args)
                   for part in split(user_tokens(listeners), args.clients)]
        for client in clients:
            client.send("go")
        opened = [client.expect("opened", 600) for client in clients]
        greeted = sum(o["greeted"] for o in opened)
        log(f"storm: {greeted}/{len(listeners)} sockets held in "
            f"{max(o['seconds'] for o in opened):.1f} s")
        if greeted != len(listeners):
            raise BenchError(f"storm: only {greeted} of {len(listeners)} sockets opened: "
                             f"{[o['errors'] for o in opened]}")
        writer = subprocess.Popen(
            [sys.executable, CLIENTS, "--writer", "--rate", str(args.rate)],
            cwd=BENCH, env={**app_env(url, **env), "PYTHONPATH": ROOT},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        writer.stdin.write(json.dumps({"customers": data.free_customer_ids[:500],
                                       "listeners": listeners}) + "\n")
        writer.stdin.flush()
        if json.loads(writer.stdout.readline() or "{}").get("event") != "started":
            raise BenchError("storm: the writer did not start")
        time.sleep(args.before)
        old_spies = spy(srv.worker_pids(), args, "shutdown")
        sigterm = time.time()
        srv.process.send_signal(signal.SIGTERM)
        srv.process.wait(60)
        exited = time.time()
        for process in old_spies:
            process.wait(60)  # py-spy writes its profile when the worker exits
        relaunch(srv)
        workers = wait_workers(srv)
        booted = time.time()
        spies = spy(workers, args, "storm")
        cpu_before = worker_cpu(workers)
        backs = []
        for client in clients:
            backs.append(client.expect("all_back", 300)["time"])
        all_back = max(backs)
        storm_cpu = worker_cpu(workers) - cpu_before
        for process in spies:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        log(f"storm: old process gone {exited - sigterm:.1f} s after SIGTERM, new workers "
            f"forked at {booted - sigterm:.1f} s, every socket greeted again after "
            f"{all_back - sigterm:.1f} s")
        time.sleep(args.after)
        writer.stdin.write("stop\n")
        writer.stdin.flush()
        written = json.loads(writer.stdout.readline())
        writer.wait(30)
        time.sleep(2)  # the last events reach the sockets
        state, errors, retries = {}, collections.Counter(), collections.Counter()
        for client in clients:
            client.send("report")
            report = client.expect("report", 120)
            state.update({int(k): v for k, v in report["users"].items()})
            errors.update(report["errors"])
            retries.update(report["retries"])
    finally:
        for client in clients:
            client.stop()
        if writer is not None and writer.poll() is None:
            writer.kill()
        srv.stop()
    stored = stored_ids(url, listeners)
    lost = duplicated = unexpected = expected_total = received_total = 0
    reconnect = []
    for user_id in listeners:
        record = state[user_id]
        expected = {i for i in stored.get(user_id, ()) if i > record["start"]}
        received = record["ids"]
        expected_total += len(expected)
        received_total += len(received)
        lost += len(expected - set(received))
        duplicated += len(received) - len(set(received))
        unexpected += len(set(received) - expected)
        closes = [at for at, code in record["closes"] if code == 1012]
        if closes and len(record["greetings"]) >= 2:
            reconnect.append(record["greetings"][1] - closes[0])
    # Sockets that ended with no close frame: when (s after SIGTERM), after how many greetings
    ended = [[round(at - sigterm, 1), sum(1 for g in state[user_id]["greetings"] if g < at)]
             for user_id in listeners for at, code in state[user_id]["closes"] if code is None]
    during = sum(1 for user_id in listeners for i in stored.get(user_id, ())
                 if i > state[user_id]["start"])
    seconds = all_back - sigterm
    seconds_back = sorted(record["greetings"][1] for record in state.values()
                          if len(record["greetings"]) >= 2)
    first_back = seconds_back[0] - sigterm if seconds_back else None
    out = {"sockets": len(listeners), "clients": args.clients, "seconds": seconds,
           "old_exit_s": exited - sigterm, "forked_s": booted - sigterm,
           "first_back_s": first_back, "worker_cpu_s": storm_cpu,
           "rate": len(listeners) / seconds, "ratio": len(listeners) / seconds / floor["rps"],
           "p50_ms": 1000 * (percentile(reconnect, 50) or 0),
           "p99_ms": 1000 * (percentile(reconnect, 99) or 0),
           "events_committed": written["committed"], "writer_failed": written["failed"],
           "events_expected": expected_total, "events_received": received_total,
           "lost": lost, "duplicated": duplicated, "unexpected": unexpected,
           "errors": dict(errors), "retries": dict(retries), "ended": ended[:20],
           "stored_after_first_greeting": during,
           "server_log": srv.problems()}
    log(f"storm: {len(listeners)} sockets back in {seconds:.1f} s after SIGTERM; reconnect "
        f"p50 {out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms; events {received_total} "
        f"received / {expected_total} expected, {lost} lost, {duplicated} duplicated, "
        f"{unexpected} unexpected; errors {dict(errors)}")
    return out


# --------------------------------------------------------------------------- main

def render(run):
    """The markdown of one run."""
    floor, connect, storm = run["floor"], run.get("connect"), run.get("storm")
    lines = [f"`{run['command']}` on {run['when']} (PostgreSQL, database `{run['database']}`; "
             f"the Procfile's web process, 2 gevent workers; {run['clients']} client "
             "processes, bench/wsclient.py)", "",
             "| scenario | sockets | per second | ratio to the floor | p50 | p99 | errors |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| floor (wrk -t2 -c64, `GET /` of bench/floor.py) | - | "
             f"{floor['rps']:,.0f} req/s | 1.00 | {floor['p50_us'] / 1000:.1f} ms | "
             f"{floor['p99_us'] / 1000:.1f} ms | {floor['errors']} |"]
    if connect:
        lines.append(
            f"| connect, {run['concurrency']} in flight, until the greeting | "
            f"{connect['greeted']:,} of {connect['sockets']:,} | {connect['rate']:,.0f} | "
            f"{connect['ratio']:.2f} | {connect['p50_ms']:.0f} ms | {connect['p99_ms']:.0f} ms | "
            f"{sum(connect['errors'].values())} |")
    if storm:
        lines.append(
            f"| reconnect storm: SIGTERM until all greeted again | {storm['sockets']:,} | "
            f"{storm['rate']:,.0f} ({storm['seconds']:.1f} s) | {storm['ratio']:.2f} | "
            f"{storm['p50_ms']:.0f} ms | {storm['p99_ms']:.0f} ms | "
            f"{sum(storm['errors'].values())} |")
    lines.append("")
    if connect:
        lines += [f"Connect: {connect['seconds']:.1f} s; CPU: gunicorn workers "
                  f"{connect['worker_cpu_s']:.1f} s ({connect['worker_ms']:.2f} ms a socket, "
                  f"the floor {floor['worker_ms']:.2f} ms a request: by worker CPU the ratio "
                  f"is {connect['cpu_ratio']:.2f}), client processes "
                  f"{connect['client_cpu_s']:.1f} s.", ""]
    if storm:
        lines += [f"Storm: the old process exited {storm['old_exit_s']:.1f} s after SIGTERM, "
                  f"the new one's workers were forked at {storm['forked_s']:.1f} s, the first "
                  f"socket was greeted again at {storm['first_back_s']:.1f} s, the last at "
                  f"{storm['seconds']:.1f} s ({storm['sockets'] / max(0.001, storm['seconds'] - storm['first_back_s']):,.0f} "
                  f"sockets/s from the first; the new workers' CPU until then "
                  f"{storm['worker_cpu_s']:.1f} s); p50/p99 are "
                  "each socket's time from its 1012 to its new greeting. Favorite events "
                  f"committed by the writer during the run: {storm['events_committed']:,}; "
                  f"stored for the socket users after their first greeting: "
                  f"{storm['events_expected']:,}; received {storm['events_received']:,}: "
                  f"**{storm['lost']} lost, {storm['duplicated']} duplicated**, "
                  f"{storm['unexpected']} unexpected. Reconnect attempts refused while the "
                  f"process restarted (not errors: retried after {run['backoff']:g} s, doubling "
                  f"to at most {run['backoff_cap']:g} s, half of it random): "
                  + (", ".join(f"{n:,} x {k}" for k, n in storm["retries"].items()) or "none")
                  + ".", ""]
    for name in ("connect", "storm"):
        result = run.get(name) or {}
        for text, count in (result.get("errors") or {}).items():
            lines.append(f"- {name} error: {count} x {text}")
        if result.get("ended"):
            lines.append(f"- {name}: sockets ended without a close frame, [s after SIGTERM, "
                         f"greetings before]: {result['ended']}")
        for line in result.get("server_log") or []:
            lines.append(f"- {name} gunicorn log: {line}")
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--database-url", default=None,
                        help=f"default {with_database(DEFAULT_DATABASE_URL, 'saathii_bench_reconnects')}")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sockets", type=int, help="connect: distinct users (2000; smoke 100)")
    parser.add_argument("--storm", type=int, help="storm: sockets held (5000; smoke 200)")
    parser.add_argument("--concurrency", type=int, default=64, help="sockets opening at once")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--rate", type=float, default=200, help="storm: events a second")
    parser.add_argument("--backoff", type=float, default=0.1,
                        help="storm: first reconnect delay after a refusal, doubling (0.1 s)")
    parser.add_argument("--backoff-cap", type=float, default=5, help="storm: its ceiling (5 s)")
    parser.add_argument("--before", type=float, default=2, help="storm: writing before SIGTERM")
    parser.add_argument("--after", type=float, default=2, help="storm: writing after all back")
    parser.add_argument("--duration", type=int, help="floor: wrk seconds (15; smoke 2)")
    parser.add_argument("--warmup", type=int, help="floor: warm-up seconds (5; smoke 0)")
    parser.add_argument("--spy", metavar="PY_SPY", help="py-spy binary: profile the workers")
    parser.add_argument("--only", choices=["connect", "storm"])
    parser.add_argument("--output", help="markdown file (default bench/results/)")
    args = parser.parse_args(argv)
    full = not args.smoke
    for name, big, small in (("sockets", 2000, 100), ("storm", 5000, 200),
                             ("duration", 15, 2), ("warmup", 5, 0)):
        if getattr(args, name) is None:
            setattr(args, name, big if full else small)
    if args.database_url is None:
        args.database_url = with_database(DEFAULT_DATABASE_URL, "saathii_bench_reconnects"
                                          + ("" if full else "_smoke"))
    args.database_url = libpq_url(args.database_url)
    return args


def main(argv=None):
    args = parse_args(argv)
    import seed

    raise_fd_limit()
    url = args.database_url
    sizes = SIZES["smoke" if args.smoke else "full"]
    sizes = {**sizes, "listeners": max(sizes["listeners"], args.storm),
             "light_customers": max(sizes["light_customers"], args.sockets)}
    sizes["users"] = max(sizes["users"], sizes["listeners"] + sizes["light_customers"] + 600)
    folder = os.path.join(RESULTS, f"reconnects-{stamp()}")
    os.makedirs(folder, exist_ok=True)
    create_database(url)
    seed.prepare([url])
    data = seed.seed_main(url, sizes)
    run = {"command": "python " + shlex.join(["bench/reconnects.py", *sys.argv[1:]]),
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "database": url.rsplit("/", 1)[1], "clients": args.clients,
           "concurrency": args.concurrency, "backoff": args.backoff,
           "backoff_cap": args.backoff_cap, "floor": measure_floor(url, args, folder)}
    problems = []
    for name, scenario in (("connect", run_connect), ("storm", run_storm)):
        if args.only in (None, name):
            try:
                run[name] = scenario(url, data, args, run["floor"])
            except Exception as err:  # noqa: BLE001 - one broken scenario must not hide the other
                problems.append(f"{name}: {type(err).__name__}: {err}")
                log(f"{name} FAILED: {err}")
    for name in ("connect", "storm"):
        result = run.get(name)
        if result and (result["errors"] or result.get("lost") or result.get("duplicated")
                       or result.get("unexpected") or result.get("greeted", 0) != result.get(
                           "sockets", 0) and name == "connect"):
            problems.append(f"{name}: errors or events lost/duplicated")
    document = render(run) + "".join(f"\n- PROBLEM: {p}" for p in problems)
    output = args.output or os.path.join(folder, "reconnects.md")
    with open(output, "w") as file:
        file.write(document)
    with open(os.path.join(folder, "reconnects.json"), "w") as file:
        json.dump({k: v for k, v in run.items()}, file, indent=1, default=str)
    print(document)
    log(f"wrote {output}; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
