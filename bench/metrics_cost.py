"""What the Prometheus metrics cost the heartbeat scenario (issue #14), in one run: the
floor, then the service with METRICS_ENABLED=true and =false in turn (the order swapped
every round, so the machine's drift falls on both), then the floor again.

    python bench/metrics_cost.py --database-url postgresql://postgres@127.0.0.1:5432/saathii_bench
    python bench/metrics_cost.py --smoke    # tiny data, 2 s runs

Prints a Markdown table (BENCHMARKS.md's "Metrics" section was written from it), and
the worker CPU the metrics hooks of one heartbeat request take, timed in-process in
multiprocess mode (`--hooks` alone prints only that).
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import seed
from common import (DEFAULT_DATABASE_URL, RESULTS, ROOT, create_database, libpq_url,
                    raise_fd_limit, stamp)
from run import measure
from scenarios import request_lines, write_request_files
from server import Server

SCENARIO = "heartbeat"


def parse_args(argv=None):
    """Command-line options; smoke mode changes the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, short runs")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL")
                        or DEFAULT_DATABASE_URL)
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs (2)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (15; smoke 2)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (5; smoke none)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hooks", action="store_true", help="time the hooks only")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2 if args.smoke else 15
    if args.warmup is None:
        args.warmup = 0 if args.smoke else 5
    args.database_url = libpq_url(args.database_url)
    return args


def run_one(label, app, args, files, data, floor=False, **env):
    """Start a server, measure one scenario on it, stop it; return its result."""
    with Server(label, app, args.database_url, floor=floor, **env) as srv:
        return measure("floor" if floor else SCENARIO, srv, files, data, args,
                       args.database_url)


def hook_cost(calls=50_000, repeats=5):
    """Microseconds of CPU the metrics take per heartbeat request (its HTTP hooks, and one
    batch observed as if each beat were alone), median of repeats; multiprocess mode."""
    sys.path.insert(0, ROOT)
    from flask import Response

    from config import Config
    from saathii import create_app, metrics

    class Bench(Config):
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{tempfile.gettempdir()}/saathii-hooks.db"
        SCHEDULER_ENABLED = False

    app = create_app(Bench)
    response = Response("{}")
    path = "/both/status/heartbeat"
    with app.test_request_context(path, method="POST") as context:
        context.request.url_rule = app.url_map.bind("localhost").match(
            path, method="POST", return_rule=True)[0]
        times = []
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(calls):
                metrics._request_started()
                metrics._request_finished(response)
                metrics.heartbeat_batch(1)
            times.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(times)


def hooks_in_a_child():
    """hook_cost() in a fresh process whose metrics are in multiprocess mode."""
    with tempfile.TemporaryDirectory() as folder:
        output = subprocess.run([sys.executable, __file__, "--hooks"], check=True,
                                capture_output=True, text=True,
                                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder})
    return float(output.stdout.split()[0])


def main(argv=None):
    """Run the comparison and print it; return the exit code."""
    args = parse_args(argv)
    if args.hooks:
        print(f"{hook_cost():.1f} us per request")
        return 0
    raise_fd_limit()
    create_database(args.database_url)
    seed.prepare([args.database_url])
    data = seed.seed_main(args.database_url, seed.SIZES["smoke" if args.smoke else "full"])
    files = write_request_files(request_lines(data, random.Random(3)),
                                os.path.join(RESULTS, f"metrics-{stamp()}"))
    runs = {"floor": [], "on": [], "off": []}
    runs["floor"].append(run_one("floor", "floor:app", args, files, data, floor=True))
    for round_ in range(args.rounds):
        order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
        for state in order:
            runs[state].append(run_one(f"metrics-{state}", "wsgi:app", args, files, data,
                                       METRICS_ENABLED=str(state == "on").lower()))
    runs["floor"].append(run_one("floor_after", "floor:app", args, files, data, floor=True))
    mean = {key: {field: statistics.mean(r[field] for r in results)
                  for field in ("rps", "worker_ms")} for key, results in runs.items()}
    print(f"\nmetrics cost, heartbeat scenario, {time.strftime('%Y-%m-%d %H:%M UTC')}, "
          f"{args.rounds} rounds of {args.duration} s\n")
    print("| service | req/s of each run | mean req/s | ratio to the floor | "
          "worker CPU per request, each run | mean |")
    print("|---|---|---:|---:|---|---:|")
    for key, title in (("floor", "floor"), ("off", "METRICS_ENABLED=false"),
                       ("on", "METRICS_ENABLED=true")):
        each = ", ".join(f"{r['rps']:,.0f}" for r in runs[key])
        cpu = ", ".join(f"{r['worker_ms']:.2f}" for r in runs[key])
        print(f"| {title} | {each} | {mean[key]['rps']:,.0f} | "
              f"{mean[key]['rps'] / mean['floor']['rps']:.2f} | {cpu} | "
              f"{mean[key]['worker_ms']:.2f} ms |")
    on, off = mean["on"], mean["off"]
    print(f"\nthroughput, on / off: {on['rps'] / off['rps']:.3f}; worker CPU per request, "
          f"on / off: {on['worker_ms'] / off['worker_ms']:.3f}")
    hooks = hooks_in_a_child()
    print(f"the hooks alone: {hooks:.1f} us of CPU per request, "
          f"{100 * hooks / 1000 / off['worker_ms']:.1f} % of a request with metrics off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
