"""Outages. Redis going away: REST keeps working, each process keeps serving its own
sockets, and events cross processes again once Redis is back. (PostgreSQL going away or
stalling, through a proxy: tests/test_stalls.py.)"""
import json
import shutil
import subprocess
import time

import pytest

from .processes import free_port, rest, wait_until_listening
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
        assert "Redis relay is down" in logs
        assert "Redis relay carries events again" in logs
        assert "Traceback" not in logs
    finally:
        on_a.close()
        on_b.close()
