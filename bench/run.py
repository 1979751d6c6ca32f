"""Benchmark the service on PostgreSQL under the Procfile's gunicorn settings.

    python bench/run.py            # full scale, about ten minutes; writes BENCHMARKS.md
    python bench/run.py --smoke    # tiny data, 2 s runs; writes bench/results/ (CI)

Seeds its own data, starts the service and the floor app with gunicorn.conf.py, drives
them with wrk, times the presence sweep, measures the feed. Exits non-zero when something
is broken (an error answer, a failed scenario, a socket missing its event), never because
a figure misses its target. Only 127.0.0.1 is contacted.
"""
import argparse
import os
import random
import shlex
import sys
import time
from datetime import datetime, timezone

import psycopg

import report
import seed
import sweep
from common import (DEFAULT_DATABASE_URL, RESULTS, ROOT, BenchError, app_env, create_database,
                    database_name, libpq_url, log, raise_fd_limit, stamp, with_database)
from feeds import run_fanout, run_feed_sockets
from scenarios import (ARRIVAL_RUNS, BY_NAME, SCENARIOS, once_file, probe, request_lines,
                       reset_state, run_wrk, usage, usage_per_request, write_request_files)
from server import Server, gunicorn_settings

HTTP = [s.name for s in SCENARIOS if s.name != "floor"]
ALL = HTTP + ["sweep", "feed_fanout", "feed_sockets"]


def parse_args(argv=None):
    """Command-line options; smoke mode changes the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, short runs (CI)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help=f"default {DEFAULT_DATABASE_URL} (smoke: saathii_bench_smoke)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (15; smoke 2)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (5; smoke none)")
    parser.add_argument("--connections", type=int, help="wrk connections (64; smoke 16)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--only", help=f"comma-separated scenarios: {', '.join(ALL)}")
    parser.add_argument("--output", help="default BENCHMARKS.md (smoke: bench/results/)")
    parser.add_argument("--fanout-sockets", type=int, help="feed fan-out sockets (1000)")
    parser.add_argument("--idle-sockets", type=int,
                        help="sockets for bench/feed_sockets.py (its default; smoke 50)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                        help="Redis relaying feed events between the fan-out's workers")
    args = parser.parse_args(argv)
    full = not args.smoke
    defaults = {"duration": 15 if full else 2, "warmup": 5 if full else 0,
                "connections": 64 if full else 16, "fanout_sockets": 1000 if full else 50,
                "idle_sockets": None if full else 50}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.database_url is None:
        args.database_url = DEFAULT_DATABASE_URL if full else \
            with_database(DEFAULT_DATABASE_URL, "saathii_bench_smoke")
    args.database_url = libpq_url(args.database_url)
    args.only = [name.strip() for name in args.only.split(",")] if args.only else ALL
    unknown = set(args.only) - set(ALL)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(ALL)}")
    benchmarks = os.path.join(ROOT, "BENCHMARKS.md")
    if args.output is None:
        args.output = benchmarks if full else os.path.join(RESULTS, f"smoke-{stamp()}.md")
    elif args.smoke and os.path.abspath(args.output) == benchmarks:
        parser.error("a smoke run never writes BENCHMARKS.md")
    return args


def measure(name, srv, files, data, args, url):
    """Probe, warm up and measure one HTTP scenario against a running server."""
    scenario = BY_NAME[name]
    connections = scenario.connections or args.connections
    probe(name, srv.port, files[name], data)
    if args.warmup:
        warmup = BY_NAME[scenario.warmup or name]
        run_wrk(warmup.script, srv.port, files[warmup.name], args.threads,
                warmup.connections or args.connections, max(1, round(args.warmup)))
    runs = []
    # A surge of a few thousand requests lasts seconds: it is run three times, each with
    # users of its own (the state reset before each), and the median run is kept.
    for run in range(ARRIVAL_RUNS if scenario.script == "once.lua" and not args.smoke else 1):
        if scenario.reset:
            reset_state(name, url, data)
        before = usage(srv.worker_pids(), url)
        result = run_wrk(scenario.script, srv.port, files[once_file(name, run)], args.threads,
                         connections, args.duration)
        result.update(usage_per_request(before, usage(srv.worker_pids(), url),
                                        max(1, result["requests"])))
        result["connections"] = connections
        runs.append(result)
    if scenario.reset:
        reset_state(name, url, data)
    result = sorted(runs, key=lambda run: run["rps"])[len(runs) // 2]
    result["errors"] = sum(run["errors"] for run in runs)
    result["runs_rps"] = [run["rps"] for run in runs]
    log(f"{name}: {result['rps']:,.0f} req/s, p50 {result['p50_us'] / 1000:.1f} ms, "
        f"p99 {result['p99_us'] / 1000:.1f} ms, {result['errors']} errors")
    if result["errors"]:
        raise BenchError(f"{name}: {result['status']} non-2xx answers, {result['timeout']} "
                         f"timeouts, {result['connect'] + result['read'] + result['write']} "
                         "socket errors")
    return result


def run_http(run, args, url, data, folder):
    """The floor, then every HTTP scenario on one service process, then the floor again."""
    files = write_request_files(request_lines(data, random.Random(3)), folder)
    results, problems = run["results"], run["problems"]
    wanted = [name for name in HTTP if name in args.only]
    floors = ["floor", "floor_after"] if not args.smoke else ["floor"]
    plan = [(floors[0], "floor:app", ["floor"]), ("service", "wsgi:app", wanted)]
    plan += [(floors[1], "floor:app", ["floor"])] if len(floors) > 1 else []
    for label, app, names in plan:
        srv = Server(label, app, url, floor=app == "floor:app")
        try:
            with srv:
                for name in names:
                    key = label if name == "floor" else name
                    try:
                        results[key] = measure(name, srv, files, data, args, url)
                    except Exception as err:  # noqa: BLE001 - reported, the run goes on
                        results[key] = {"error": str(err)}
                        problems.append(f"{key}: {err}")
                        log(f"{key} FAILED: {err}")
        except BenchError as err:  # the server did not start
            for name in names:
                results[label if name == "floor" else name] = {"error": str(err)}
            problems.append(str(err))
            log(f"FAILED: {err}")
        problems += [f"{label} gunicorn log: {line}" for line in srv.problems()]
    floor = [results[key]["rps"] for key in floors if "rps" in results.get(key, {})]
    run["floor_rps"] = sum(floor) / len(floor) if floor else None


def run_sweep(run, args, folder):
    """Scenario 6: the same lapsed count in a big and a small status table."""
    sizes = run["sizes"]
    base = database_name(args.database_url)
    parts = {"big": sizes["sweep_big"], "small": sizes["sweep_small"]}
    names = {key: f"{base}_sweep_{seed.short(rows)}" for key, rows in parts.items()}
    urls = {key: with_database(args.database_url, name) for key, name in names.items()}
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    out = {}
    for key in ("big", "small"):
        log(f"sweep: seeding {names[key]} ({parts[key]:,} rows, {sizes['lapsed']:,} lapsed)")
        lapsed = seed.seed_sweep(urls[key], parts[key], sizes["lapsed"], now)
        timing = sweep.run(urls[key], lapsed, now, 2 if args.smoke else 7,
                           app_env(urls[key]), folder)
        out[key] = {**timing, "rows": parts[key], "database": names[key]}
        log(f"sweep {names[key]}: median {timing['median'] * 1000:.1f} ms")
    run["sweep"] = out


def main(argv=None):
    """Run the bench; return the exit code."""
    args = parse_args(argv)
    started = time.monotonic()
    raise_fd_limit()
    sizes = seed.SIZES["smoke" if args.smoke else "full"]
    folder = os.path.join(RESULTS, f"run-{stamp()}")
    os.makedirs(folder, exist_ok=True)
    url = args.database_url
    run = {"args": args, "results": {}, "problems": [], "sizes": sizes, "database":
           database_name(url), "gunicorn": gunicorn_settings(),
           "command": "python " + shlex.join(["bench/run.py", *sys.argv[1:]]),
           "service_command": "python -m gunicorn -c gunicorn.conf.py wsgi:app",
           "wrk": report.wrk_version()}
    needs_main = any(name in args.only for name in HTTP + ["feed_fanout", "feed_sockets"])
    try:
        urls = [url] if needs_main else []
        if "sweep" in args.only:
            base = database_name(url)
            urls += [with_database(url, f"{base}_sweep_{seed.short(sizes[key])}")
                     for key in ("sweep_big", "sweep_small")]
        for each in urls:
            create_database(each)
        log(f"fresh schemas, flask db upgrade: {', '.join(map(database_name, urls))}")
        seed.prepare(urls)
        with psycopg.connect(urls[0]) as conn:
            run["postgres"] = conn.execute("show server_version").fetchone()[0].split()[0]
        data = seed.seed_main(url, sizes) if needs_main else None
        run["favorites"] = data.favorites if data else 0
        steps = [("http", lambda: run_http(run, args, url, data, folder),
                  any(name in args.only for name in HTTP)),
                 ("sweep", lambda: run_sweep(run, args, folder), "sweep" in args.only),
                 ("feed_fanout", lambda: run_fanout(run, args, url, data, folder),
                  "feed_fanout" in args.only),
                 ("feed_sockets", lambda: run_feed_sockets(run, args, url),
                  "feed_sockets" in args.only)]
        for name, step, wanted in steps:
            if not wanted:
                continue
            try:
                step()
            except Exception as err:  # noqa: BLE001 - one broken scenario must not hide the rest
                run["problems"].append(f"{name}: {type(err).__name__}: {err}")
                run.setdefault(name.replace("feed_", ""), {"error": str(err)[:500]})
                log(f"{name} FAILED: {err}")
    except BenchError as err:
        run["problems"].append(str(err))
        log(f"FAILED: {err}")
    document = report.render(run)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    document += report.kept_part(args.output)  # what was written by hand stays
    with open(args.output, "w") as file:
        file.write(document)
    if args.smoke:
        print(document)
    log(f"wrote {args.output} in {time.monotonic() - started:.0f} s; "
        f"{len(run['problems'])} problems")
    return 1 if run["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
