"""The process under test: gunicorn started exactly as the Procfile's web process."""
import http.client
import os
import re
import subprocess
import sys
import time

from common import BENCH, RESULTS, ROOT, BenchError, app_env, children, free_port, log


def gunicorn_settings():
    """Worker class and workers as gunicorn.conf.py sets them, read from the file."""
    with open(os.path.join(ROOT, "gunicorn.conf.py")) as file:
        text = file.read()
    worker_class = re.search(r'^worker_class\s*=\s*"([^"]+)"', text, re.M)
    return {"worker_class": worker_class.group(1) if worker_class else "?",
            "workers": int(os.environ.get("WEB_CONCURRENCY", "2")),
            "worker_connections": int(os.environ.get("WORKER_CONNECTIONS", "10000"))}


class Server:
    """A gunicorn master with its workers on a free port; use as a context manager."""

    def __init__(self, name, app, database_url, floor=False, **env):
        self.name, self.app, self.floor = name, app, floor
        self.port = free_port()
        self.env = app_env(database_url, PORT=self.port, **env)
        if floor:
            # The floor app lives in bench/; the config file and its hooks stay the repo's.
            self.env["PYTHONPATH"] = os.pathsep.join(
                [BENCH, self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.workers = int(self.env["WEB_CONCURRENCY"])
        os.makedirs(RESULTS, exist_ok=True)
        self.log_path = os.path.join(RESULTS, f"gunicorn-{name}.log")
        self.process = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=60):
        """Start gunicorn (access log to /dev/null) and wait for every worker to answer."""
        with open(self.log_path, "w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=errors)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name}: gunicorn exited with {self.process.returncode}"
                                 f"; see {self.log_path}")
            if len(children(self.process.pid)) == self.workers and self._answers():
                time.sleep(0.5)  # let every worker finish post_worker_init
                if len(children(self.process.pid)) == self.workers:
                    log(f"{self.name}: {self.app} on 127.0.0.1:{self.port}, "
                        f"{self.workers} workers")
                    return
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"{self.name}: gunicorn not ready in {timeout}s; see {self.log_path}")

    def start_clock(self):
        """Start the Procfile's clock process (the sweeper) with this server's settings;
        the caller terminates it."""
        log_file = open(os.path.join(RESULTS, f"clock-{self.name}.log"), "w")
        with log_file:
            return subprocess.Popen([sys.executable, "-m", "saathii.scheduler"], cwd=ROOT,
                                    env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log_file)

    def _answers(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/" if self.floor else "/favorites")
            status = conn.getresponse().status
            conn.close()
            return status in (200, 401)
        except OSError:
            return False

    def worker_pids(self):
        """The pids of the worker processes."""
        return children(self.process.pid) if self.process else []

    def stop(self, timeout=30):
        """Stop gunicorn: TERM, then KILL after the timeout."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def problems(self, limit=10):
        """Lines of gunicorn's error log above INFO (tracebacks, worker crashes)."""
        if not os.path.exists(self.log_path):
            return []
        with open(self.log_path, errors="replace") as file:
            lines = [line.rstrip() for line in file if line.strip()]
        return [line for line in lines if "] [INFO] " not in line][:limit]  # None: all
