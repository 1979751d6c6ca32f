"""The feed scenarios: fan-out of one presence change, and bench/feed_sockets.py's idle sockets."""
import json
import os
import shlex
import subprocess
import sys
import uuid

from common import BENCH, ROOT, log, token
from server import Server


def redis_reachable(url):
    """True when Redis answers PING at this URL (on this machine)."""
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def run_fanout(run, args, url, data, folder):
    """Scenario 8: 1,000 subscribed sockets, presence changes of one listener through REST."""
    listener = data.listener_ids[-1]
    customers = (data.light_ids + data.free_customer_ids)[:args.fanout_sockets]
    tokens = os.path.join(folder, "fanout-tokens.tsv")
    with open(tokens, "w") as file:
        file.writelines(f"{user}\t{token(user)}\n" for user in customers)
    if redis_reachable(args.redis_url):
        env = {"REDIS_URL": args.redis_url, "REDIS_CHANNEL": f"saathii:bench:{uuid.uuid4().hex}"}
        where = (f"the Procfile's web process with its {run['gunicorn']['workers']} workers, "
                 "REDIS_URL set (events relayed between workers through Redis)")
    else:
        env = {"WEB_CONCURRENCY": 1}
        where = "one worker (WEB_CONCURRENCY=1): no Redis to relay events between workers"
    with Server("fanout", "wsgi:app", url, **env) as srv:
        command = [sys.executable, os.path.join(BENCH, "feed_fanout.py"), "--port",
                   str(srv.port), "--listener", str(listener), "--listener-token",
                   token(listener), "--tokens", tokens, "--rounds", "2" if args.smoke else "5"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"feed_fanout.py printed nothing: {done.stderr[-1000:]}")
    result = {**json.loads(lines[-1]), "server": where}
    run["fanout"] = result
    log(f"fan-out: {result['delivered']}/{result['expected']} delivered, p50 "
        f"{result['p50_ms'] or 0:.1f} ms, p99 {result['p99_ms'] or 0:.1f} ms")
    if done.returncode != 0:
        raise RuntimeError(f"fan-out: {result['missing']} events missing, open errors "
                           f"{result['open_errors']}")
    run["problems"] += [f"fanout gunicorn log: {line}" for line in srv.problems()]


def run_feed_sockets(run, args, url):
    """Scenario 7: run bench/feed_sockets.py (when it exists) and keep its report."""
    path = os.path.join(BENCH, "feed_sockets.py")
    if not os.path.exists(path):
        log("bench/feed_sockets.py is missing: idle sockets skipped")
        return
    command = [sys.executable, path, "--database-url", url]
    if args.idle_sockets:
        command += ["--sockets", str(args.idle_sockets)]
    if args.smoke:
        command += ["--idle", "1"]
    shown = "python " + shlex.join(["bench/feed_sockets.py", *command[2:]])
    log(f"idle sockets: {shown}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    text = done.stdout
    start = text.find("## ")
    run["sockets"] = {"command": shown, "report": text[start:] if start >= 0 else ""}
    if done.returncode != 0:
        run["sockets"]["error"] = f"exit code {done.returncode}: {done.stderr[-500:]}"
        raise RuntimeError(f"bench/feed_sockets.py exited with {done.returncode}")
