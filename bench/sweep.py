"""Time the presence sweep on two status tables of different sizes with the same lapsed count.

The runner seeds each database with COPY; this module, run by the runner as
`python bench/sweep.py --lapsed-file F --now ISO --repeats N` with DATABASE_URL set,
calls saathii.domain.sweeper.sweep() inside an app context with the service clock
stopped at the seed's reference time, and prints one JSON line.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reset_lapsed(url, lapsed_ids, now):
    """Put the lapsed users back online, silent for ten minutes; vacuum the table."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update user_status set is_online = true, last_seen = %s, "
                     "updated_at = %s where user_id = any(%s)",
                     (now - timedelta(minutes=10), now - timedelta(minutes=10), lapsed_ids))
        conn.execute("vacuum analyze user_status")


def time_sweeps(url, lapsed_ids, now, repeats):
    """Run sweep() `repeats` times, each on freshly lapsed rows; return the seconds."""
    sys.path.insert(0, ROOT)
    from saathii import create_app
    from saathii.clock import clock
    from saathii.domain.sweeper import sweep
    from saathii.extensions import db

    app = create_app()
    clock.frozen_at, clock.offset = now.replace(tzinfo=timezone.utc), timedelta(0)
    seconds = []
    for repeat in range(repeats):
        if repeat:
            reset_lapsed(url, lapsed_ids, now)
        with app.app_context():
            started = time.perf_counter()
            result = sweep()
            seconds.append(time.perf_counter() - started)
            db.session.remove()
        if result.taken_offline != len(lapsed_ids):
            raise SystemExit(f"sweep took {result.taken_offline} users offline, "
                             f"expected {len(lapsed_ids)}")
    return seconds


def main():
    """Entry point of the subprocess: time sweeps, print {"seconds": [...], ...}."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lapsed-file", required=True)
    parser.add_argument("--now", required=True, help="naive UTC reference time of the seed")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    with open(args.lapsed_file) as file:
        lapsed_ids = [int(line) for line in file if line.strip()]
    now = datetime.fromisoformat(args.now)
    seconds = time_sweeps(url, lapsed_ids, now, args.repeats)
    print(json.dumps({"seconds": seconds, "median": statistics.median(seconds),
                      "min": min(seconds), "lapsed": len(lapsed_ids)}))


def run(url, lapsed_ids, now, repeats, env, folder, timeout=600):
    """Run this module as a subprocess on one database; return its JSON result."""
    path = os.path.join(folder, f"lapsed-{os.path.basename(url)}.txt")
    with open(path, "w") as file:
        file.write("\n".join(map(str, lapsed_ids)) + "\n")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--lapsed-file", path,
                           "--now", now.isoformat(), "--repeats", str(repeats)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"sweep timing failed: {done.stderr[-1500:]}{done.stdout[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
