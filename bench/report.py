"""BENCHMARKS.md: the run's settings, the throughput table, the sweep and the feed figures."""
import os
import platform
import subprocess
import time

from common import HIGH_LIMIT, ROOT
from scenarios import ARRIVAL_CONNECTIONS, SCENARIOS


def machine():
    """nproc, memory, kernel, PostgreSQL and wrk versions, as one line."""
    with open("/proc/meminfo") as file:
        kib = int(next(line for line in file if line.startswith("MemTotal")).split()[1])
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {kib / 1024 / 1024:.1f} GiB memory, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def wrk_version():
    """wrk's version line."""
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).split(" Copyright")[0].strip()


def _ms(us):
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us / 1000:.2f} ms"


def args_duration(result):
    """The -d of a wrk run, in seconds."""
    return round(result["duration_us"] / 1e6)


def http_table(results, floor_rps):
    """The scenario | req/s | p50 | p99 | ratio | target | met? table."""
    rows = ["| scenario | req/s | p50 | p99 | ratio | target | met? |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for scenario in SCENARIOS:
        result = results.get(scenario.name)
        if result is None:
            continue
        if "error" in result:
            rows.append(f"| {scenario.title} | error: {result['error'][:120]} | | | | | no |")
            continue
        rps = result["rps"]
        if scenario.name == "floor":
            ratio, target, met = "1.00", "-", "-"
        else:
            base = floor_rps if scenario.versus == "floor" else \
                (results.get(scenario.versus) or {}).get("rps")
            value = rps / base if base else None
            ratio = f"{value:.2f}" if value is not None else "-"
            if scenario.versus != "floor":
                ratio += f" of {scenario.versus}"
            target = f">= {scenario.target:.2f}"
            met = "-" if value is None else ("yes" if value >= scenario.target else
                                             f"**no** ({value / scenario.target - 1:+.0%})")
        rps_text = f"{rps:,.0f}"
        if scenario.script == "pairs.lua":
            rps_text += f" ({rps / 2:,.0f} pairs/s)"
        elif scenario.script == "once.lua":
            runs = result.get("runs_rps", [])
            rps_text += (f" ({result['received']:,} users in "
                         f"{result['span_us'] / 1e6:.2f} s"
                         + (f"; median of {len(runs)} runs: "
                            + ", ".join(f"{rate:,.0f}" for rate in runs) + "/s"
                            if len(runs) > 1 else "")
                         + ("" if result["received"] == result["expected"] else
                            f"; {result['expected'] - result['received']:,} not served "
                            f"in the {args_duration(result)} s run") + ")")
        rows.append(f"| {scenario.title} | {rps_text} | {_ms(result['p50_us'])} | "
                    f"{_ms(result['p99_us'])} | {ratio} | {target} | {met} |")
    return rows


def cpu_table(results):
    """Where each scenario's CPU goes, per request."""
    rows = ["| scenario | CPU in the gunicorn workers | CPU elsewhere (PostgreSQL, wrk, "
            "the rest of the machine) | new PostgreSQL connections per 1,000 requests |",
            "|---|---:|---:|---:|"]
    for scenario in SCENARIOS:
        result = results.get(scenario.name)
        if result and "worker_ms" in result:
            rows.append(f"| {scenario.name} | {result['worker_ms']:.2f} ms | "
                        f"{result['other_ms']:.2f} ms | "
                        f"{result['new_connections_per_1000']:.0f} |")
    return rows


def sweep_section(sweep):
    """The sweep timing table."""
    if not sweep:
        return []
    if "error" in sweep:
        return ["## Presence sweep", "", f"Error: {sweep['error']}", ""]
    big, small = sweep["big"], sweep["small"]
    ratio = big["median"] / small["median"]
    lines = ["## Presence sweep", "",
             "`saathii.domain.sweeper.sweep()` in an app context, the service clock stopped "
             "at the seed's time; each run on freshly lapsed rows (reset and VACUUM ANALYZE "
             "between runs); separate databases, seeded with COPY.", "",
             "| status rows | lapsed | median | fastest | runs |", "|---:|---:|---:|---:|---:|"]
    for label in ("big", "small"):
        part = sweep[label]
        lines.append(f"| {part['rows']:,} ({part['database']}) | {part['lapsed']:,} | "
                     f"{part['median'] * 1000:.1f} ms | {part['min'] * 1000:.1f} ms | "
                     f"{len(part['seconds'])} |")
    met = "yes" if ratio <= 2 else f"**no** ({ratio / 2 - 1:+.0%})"
    lines += ["", f"Time ratio, big over small: **{ratio:.2f}** (target <= 2: {met}).", ""]
    return lines


def fanout_section(fanout):
    """The feed fan-out figures."""
    if not fanout:
        return []
    lines = ["## Feed fan-out", ""]
    if "error" in fanout:
        return lines + [f"Error: {fanout['error']}", ""]
    lines += [
        f"{fanout['sockets']:,} customer feed sockets (one gevent client process), each "
        f"sent `{{\"type\": \"subscribe\", \"user_ids\": [L]}}` for one listener L; then "
        f"{fanout['rounds']} times `PUT /both/status/me` as L (busy, then available again). "
        f"Latency: from just before the REST call to each socket's receipt of the event. "
        f"Server: {fanout['server']}.", "",
        "| sockets opened | events delivered / expected | p50 | p99 | max | "
        "REST call (median) | time to open the sockets |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {fanout['opened']:,} of {fanout['sockets']:,} | {fanout['delivered']:,} / "
        f"{fanout['expected']:,} | {fanout['p50_ms']:.1f} ms | {fanout['p99_ms']:.1f} ms | "
        f"{fanout['max_ms']:.1f} ms | {fanout['rest_ms_median']:.1f} ms | "
        f"{fanout['open_seconds']:.1f} s |", ""]
    return lines


def sockets_section(sockets):
    """bench/feed_sockets.py's own report, embedded."""
    if not sockets:
        return []
    lines = ["## Idle feed sockets", "", f"`{sockets['command']}` (bench/feed_sockets.py)", ""]
    if "error" in sockets:
        lines += [f"Error: {sockets['error']}", ""]
    body = sockets.get("report", "").strip().splitlines()
    if body and body[0].startswith("## "):
        body[0] = f"**{body[0][3:]}**"
    lines += body
    return lines + [""]


KEPT = "<!-- Written by hand from here on: bench/run.py keeps it when it rewrites the file. -->"


def kept_part(path):
    """The hand-written part of an existing output file (from the KEPT line on), or ""."""
    try:
        with open(path) as file:
            text = file.read()
    except FileNotFoundError:
        return ""
    start = text.find(KEPT)
    return "" if start < 0 else "\n" + text[start:]


def render(run):
    """The whole Markdown document for one run (a dict built by bench/run.py)."""
    args, results = run["args"], run["results"]
    floor_rps = run.get("floor_rps")
    sizes = run["sizes"]
    lines = [
        "# Benchmarks", "",
        f"Produced by `{run['command']}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" ({'smoke: tiny data, no meaning as figures' if args.smoke else 'full run'}).", "",
        f"- Machine: {machine()}; load generator and server share it.",
        f"- Database: PostgreSQL {run.get('postgres', '?')} on 127.0.0.1, database "
        f"`{run['database']}`, reseeded with COPY at the start of the run.",
        f"- Data: {sizes['users']:,} users, {sizes['listeners']:,} of them listeners (all "
        f"online, a tenth busy; a tenth of customers online); one customer with "
        f"{sizes['heavy_favorites']:,} favorites; {sizes['light_customers']:,} customers with "
        f"{sizes['light_favorites']} favorites each ({run.get('favorites', 0):,} favorites).",
        f"- Service: `{run['service_command']}` (the Procfile's web process): "
        f"{run['gunicorn']['worker_class']} worker class, {run['gunicorn']['workers']} workers "
        f"(WEB_CONCURRENCY), worker_connections {run['gunicorn']['worker_connections']}, from "
        f"gunicorn.conf.py; SAATHII_ENV=production, SCHEDULER_ENABLED=false, "
        f"LOG_LEVEL=WARNING, access log to /dev/null"
        + (f"; per-user rate limits on but raised to {HIGH_LIMIT} (RATELIMIT_*) so that "
           "none refuses the load."
           if os.path.exists(os.path.join(ROOT, "saathii", "rate_limits.py")) else "."),
        "- Floor: `bench/floor.py`, a bare Flask app returning `{}`, under the same command "
        "and gunicorn.conf.py (`gunicorn -c gunicorn.conf.py floor:app`)"
        + (", measured before and after the scenarios; the ratio uses the mean."
           if "floor_after" in results else ", measured in the same run."),
        f"- Load: {run.get('wrk', 'wrk')} `-t{args.threads} -c{args.connections} "
        f"-d{args.duration}s --latency --timeout 10s`, each run after a {args.warmup:g} s "
        f"warm-up, from its own process on 127.0.0.1; Lua scripts (bench/lua/) rotate through "
        f"prepared requests with one token per user: 10,000 users for the heartbeat, 5,000 "
        f"callers with random ids for presence, 20,000 customers for add/remove.",
        f"- State-change surges, {ARRIVAL_CONNECTIONS} requests in flight (`-c"
        f"{ARRIVAL_CONNECTIONS}`): comes_online sends one heartbeat for each listener of a "
        f"set taken offline just before (bench/lua/once.lua: each request once; its rate is "
        f"the users over the time from the first send to the last answer, warmed up with "
        f"the heartbeat's requests; run three times, each with its own users, whose tokens "
        f"are new to the workers as after a deploy, and the median run kept); status_toggle puts online, available listeners busy "
        f"and, 256 pairs later, available again (bench/lua/pairs.lua, as add/remove). "
        f"The state is reset (and VACUUM ANALYZEd) before each measured run.", "",
        "## HTTP throughput", "",
        *http_table(results, floor_rps), "",
        "Ratio: the scenario's requests per second over the floor's (the cursor scenario: "
        "over page 1; comes_online: users come online per second). Add/remove and the "
        "status toggle count requests: each pair is two requests (add and remove, busy "
        "and available), so pairs per second are half.", ""]
    if "floor_after" in results and "rps" in results["floor_after"]:
        before, after = results["floor"]["rps"], results["floor_after"]["rps"]
        lines += [f"Floor: {before:,.0f} req/s before the scenarios, {after:,.0f} after.", ""]
    lines += ["CPU per request during each measured run (from /proc: the workers' own time, "
              "and the machine's busy time less theirs; both cores are shared by server, "
              "database and load generator):", "", *cpu_table(results), ""]
    lines += sweep_section(run.get("sweep"))
    lines += fanout_section(run.get("fanout"))
    lines += sockets_section(run.get("sockets"))
    if run["problems"]:
        lines += ["## Problems in this run", ""] + [f"- {p}" for p in run["problems"]] + [""]
    return "\n".join(lines).rstrip() + "\n"

