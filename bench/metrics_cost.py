"""What the Prometheus metrics cost the heartbeat scenario (issue #14), in one run: the
floor, then the service with METRICS_ENABLED=true and =false in turn (the order swapped
every round, so the machine's drift falls on both), then the floor again.

    python bench/metrics_cost.py --database-url postgresql://postgres@127.0.0.1:5432/saathii_bench
    python bench/metrics_cost.py --smoke    # tiny data, 2 s runs

Prints a Markdown table (BENCHMARKS.md's "Metrics" section was written from it).
"""
import argparse
import os
import random
import statistics
import sys
import time

import seed
from common import (DEFAULT_DATABASE_URL, RESULTS, create_database, libpq_url, log,
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


def main(argv=None):
    """Run the comparison and print it; return the exit code."""
    args = parse_args(argv)
    raise_fd_limit()
    create_database(args.database_url)
    seed.prepare([args.database_url])
    data = seed.seed_main(args.database_url, seed.SIZES["smoke" if args.smoke else "full"])
    files = write_request_files(request_lines(data, random.Random(3)),
                                os.path.join(RESULTS, f"metrics-{stamp()}"))
    rps = {"on": [], "off": []}
    floors = [run_one("floor", "floor:app", args, files, data, floor=True)["rps"]]
    for round_ in range(args.rounds):
        order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
        for state in order:
            result = run_one(f"metrics-{state}", "wsgi:app", args, files, data,
                             METRICS_ENABLED=str(state == "on").lower())
            rps[state].append(result["rps"])
    floors.append(run_one("floor_after", "floor:app", args, files, data, floor=True)["rps"])
    floor = statistics.mean(floors)
    on, off = statistics.mean(rps["on"]), statistics.mean(rps["off"])
    print(f"\nmetrics cost, heartbeat scenario, {time.strftime('%Y-%m-%d %H:%M UTC')}\n")
    print("| service | runs (req/s) | mean req/s | ratio to the floor |")
    print("|---|---|---:|---:|")
    print(f"| floor | {', '.join(f'{r:,.0f}' for r in floors)} | {floor:,.0f} | 1.00 |")
    for state in ("off", "on"):
        runs = ", ".join(f"{r:,.0f}" for r in rps[state])
        mean = statistics.mean(rps[state])
        print(f"| METRICS_ENABLED={str(state == 'on').lower()} | {runs} | {mean:,.0f} | "
              f"{mean / floor:.2f} |")
    print(f"\nmetrics on / off: {on / off:.3f} (cost {100 * (1 - on / off):.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
