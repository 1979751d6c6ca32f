"""A reload (gunicorn's HUP) hands feed sockets over: the old workers close them with
1012 only once the new workers accept; a stop (SIGTERM) closes them at once."""
import os
import re
import signal

import pytest
import simple_websocket

from .processes import read_logs_until
from .sockets import FeedClient
from .workers import worker_pids


def closed_with(client):
    """(code, reason) of the socket's close."""
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        while True:
            client.ws.receive(timeout=30)
    return closed.value.reason, closed.value.message


def test_a_reload_closes_sockets_only_once_the_new_workers_accept(web_process, customer,
                                                                  tmp_path):
    base = web_process(workers=1, relay=None, LOG_LEVEL="INFO")
    master = web_process.masters[-1]
    old = worker_pids(master, 1)
    client = FeedClient(base, customer.token)
    assert client.receive()["type"] == "connection_established"
    read_logs_until(tmp_path, f"worker {old[0]} ready to accept")
    os.kill(master, signal.SIGHUP)
    code, reason = closed_with(client)
    # Told to come back within the second its one socket is spread over: no restart wait.
    assert code == 1012
    assert int(re.fullmatch(r"Service restart; reconnect in (\d+) ms", reason)[1]) <= 1000
    logs = read_logs_until(tmp_path, "handover: the new workers accept; closing feed sockets")
    new = [pid for pid in worker_pids(master, 1) if pid not in old]
    assert new, "no new worker"
    ready = logs.index(f"worker {new[0]} ready to accept")
    assert ready < logs.index("handover: the new workers accept")
    again = FeedClient(base, customer.token)  # the new worker greets
    assert again.receive()["type"] == "connection_established"
    again.close()


def test_a_stop_closes_sockets_at_once_telling_clients_to_wait_for_the_restart(
        web_process, make_user):
    """Both workers of a start stop together: neither takes the other for a reload's."""
    base = web_process(workers=2, FEED_RESTART_SECONDS=3)
    clients = [FeedClient(base, make_user().token) for _ in range(6)]
    for client in clients:
        assert client.receive()["type"] == "connection_established"
    web_process.processes[-1].send_signal(signal.SIGTERM)
    for client in clients:
        code, reason = closed_with(client)
        assert code == 1012
        delay = int(re.fullmatch(r"Service restart; reconnect in (\d+) ms", reason)[1])
        assert 3000 <= delay <= 4000  # the restart's 3 s, then a worker's second
