"""Fixtures and helpers for the service's own processes: gunicorn web and clock processes
on the test database (and Redis), their logs, and REST calls to them."""
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def redis_url():
    """A reachable Redis (TEST_REDIS_URL, default the local one); under CI=true, required."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        message = f"Redis at {url} is not reachable: {err}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def start_process(app, config, tmp_path):
    """Start a service process (gunicorn with the Procfile's settings, or another module)
    on the test database; everything started is stopped after the test. Each process's
    output goes to a log file (a pipe nobody reads would fill up and stall it)."""
    started = []

    def start(args, wait_for_port=None, **env):
        """env: variables to set; a None value removes a variable."""
        environment = {
            **os.environ, "DATABASE_URL": config.SQLALCHEMY_DATABASE_URI,
            "JWT_SECRET": config.JWT_SECRET, "SAATHII_ENV": "testing", "LOG_LEVEL": "WARNING",
            **{key: str(value) for key, value in env.items() if value is not None},
        }
        for key in [key for key, value in env.items() if value is None]:
            environment.pop(key, None)
        log_path = tmp_path / f"process-{len(started)}.log"
        with open(log_path, "w") as log_file:
            process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT,
                                       env=environment, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        process.log_path = log_path
        started.append(process)
        if wait_for_port:
            wait_until_listening(process, wait_for_port)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_listening(process, port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.log_path.read_text() if hasattr(process, "log_path") else ""
            raise RuntimeError(f"process exited early:\n{output}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


@pytest.fixture
def web_process(start_process, request):
    """Start a gunicorn web process (the Procfile's command and settings); return its
    host:port. By default one worker on Redis; relay=None leaves REDIS_URL unset (events
    then go through PostgreSQL, or stay in the process on SQLite), workers=None leaves
    the worker count to the Procfile's default. Each test gets its own channels."""
    suffix = uuid.uuid4().hex
    channel = f"saathii:test:{suffix}"

    def start(workers=1, relay="redis", **env):
        port = free_port()
        redis = request.getfixturevalue("redis_url") if relay == "redis" else None
        settings = {"PORT": port, "WEB_CONCURRENCY": workers, "REDIS_URL": redis,
                    "REDIS_CHANNEL": channel, "NOTIFY_CHANNEL": f"saathii_test_{suffix}",
                    "EVENT_RELAY": None, "RATELIMIT_ENABLED": "false",
                    "PRESENCE_FROM_SOCKETS": "false", **env}  # as in conftest's TestConfig
        process = start_process(["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                wait_for_port=port, **settings)
        start.masters.append(process.pid)
        start.processes.append(process)
        return f"127.0.0.1:{port}"

    start.channel = channel
    start.notify_channel = f"saathii_test_{suffix}"
    start.masters = []
    start.processes = []
    return start


def read_logs_until(tmp_path, line, timeout=10, count=1):
    """The processes' logs once they hold a line (`count` times): gunicorn writes the
    access log only after the response has gone out, so the client can be faster than
    the log."""
    deadline = time.monotonic() + timeout
    while True:
        logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
        if logs.count(line) >= count or time.monotonic() > deadline:
            assert logs.count(line) >= count, logs
            return logs
        time.sleep(0.05)


def rest(base, method, path, account, body=None, connection=None):
    """Call a live server's REST API as an account; return (status, JSON body). On a
    given keep-alive connection (left open), or on a new one."""
    own = connection is None
    if own:
        connection = http.client.HTTPConnection(base, timeout=10)
    headers = {"Authorization": f"Bearer {account.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    result = response.status, json.loads(response.read() or b"null")
    if own:
        connection.close()
    return result
