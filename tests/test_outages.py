"""Outages. Redis going away: REST keeps working, each process keeps serving its own
sockets, and events cross processes again once Redis is back. PostgreSQL going away:
requests get 503 JSON, and the service recovers by itself when the database returns."""
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from .conftest import free_port, rest, wait_until_listening
from .test_multiprocess import open_feed


@pytest.fixture
def private_redis():
    """A Redis server of this test's own, which the test may stop and start again."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    processes = []

    def start():
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        wait_until_listening(process, port)

    def stop():
        processes[-1].terminate()
        processes[-1].wait(10)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def churn_until_received(server, customer, listener, socket, timeout=40):
    """Add and remove a favorite through `server` until `socket` gets an event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for method, path in (("POST", "/favorites/add"), ("DELETE", "/favorites/remove")):
            status, _ = rest(server, method, path, customer, {"listener_id": listener.id})
            assert status == 200
            message = socket.ws.receive(timeout=1)
            if message is not None:
                return json.loads(message)
    raise AssertionError("no event crossed processes in time")


def test_redis_outage(web_process, private_redis, customer, listener, tmp_path):
    redis_url, start_redis, stop_redis = private_redis
    server_a = web_process(REDIS_URL=redis_url)
    server_b = web_process(REDIS_URL=redis_url)
    on_a, on_b = open_feed(server_a, listener), open_feed(server_b, listener)
    try:
        status, _ = rest(server_a, "POST", "/favorites/add", customer,
                         {"listener_id": listener.id})
        assert status == 200
        assert on_b.receive(timeout=10)["type"] == "favorite_added"
        assert on_a.receive(timeout=10)["type"] == "favorite_added"

        stop_redis()
        started = time.monotonic()
        status, body = rest(server_a, "DELETE", "/favorites/remove", customer,
                            {"listener_id": listener.id})
        assert (status, body["is_favorited"]) == (200, False)
        assert time.monotonic() - started < 5  # REST does not hang on Redis
        assert on_a.receive(timeout=10)["type"] == "favorite_removed"  # local delivery
        assert rest(server_b, "GET", "/both/status/me", listener)[0] == 200

        start_redis()
        crossed = churn_until_received(server_a, customer, listener, on_b)
        assert crossed["type"].startswith("favorite_")
        logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
        assert "Redis publish failed" in logs
        assert "Redis relay lost its subscription" in logs
        assert "Traceback" not in logs
    finally:
        on_a.close()
        on_b.close()


@pytest.fixture
def postgres_control(config):
    """Stop and start this machine's PostgreSQL (the test database's server)."""
    if not config.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
        pytest.skip("the test database is not PostgreSQL")
    version = next(iter(sorted(os.listdir("/etc/postgresql"))), None) \
        if os.path.isdir("/etc/postgresql") else None
    if version is None or shutil.which("pg_ctlcluster") is None:
        message = "cannot stop and start the local PostgreSQL (pg_ctlcluster)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

    def ctl(action, check=True):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
                       + (["-m", "fast"] if action == "stop" else []),
                       check=check, timeout=60, capture_output=True)

    yield ctl
    ctl("start", check=False)  # whatever happened, leave the server running


def test_postgres_outage(web_process, postgres_control, customer, listener, tmp_path):
    server = web_process()
    results, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            for method, path in (("POST", "/both/status/heartbeat"), ("GET", "/favorites")):
                began = time.monotonic()  # when the request was sent
                try:
                    results.append((began, *rest(server, method, path, customer)))
                except OSError as err:  # the service itself must stay up
                    results.append((began, "connection failed", str(err)))
            time.sleep(0.02)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        # The server answers normally before the outage (and says why if it does not).
        deadline = time.monotonic() + 30
        while not any(status == 200 for _, status, _ in results[-4:]):
            assert time.monotonic() < deadline, results[-4:]
            time.sleep(0.1)
        time.sleep(1)
        stopping_at = time.monotonic()
        postgres_control("stop")
        stopped_at = time.monotonic()
        time.sleep(3)
        restarting_at = time.monotonic()  # it may answer before start() returns
        postgres_control("start")
        started_at = time.monotonic()
        deadline = started_at + 60
        while time.monotonic() < deadline:  # recovers by itself, no restart
            if any(t > started_at + 1 and status == 200 for t, status, _ in results[-20:]):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        worker.join(10)
    during = [(status, body) for t, status, body in results if stopped_at < t < restarting_at]
    assert during, "no requests were made during the outage"
    assert all(status == 503 for status, _ in during), {status for status, _ in during}
    assert all(isinstance(body, dict) and body.get("detail") for _, body in during)
    after = [status for t, status, _ in results if t > started_at + 1]
    assert after and after[-1] == 200
    before = [(status, body) for t, status, body in results if t < stopping_at]
    assert all(status == 200 for status, _ in before[-10:]), before[-10:]
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert "Traceback" not in logs
