"""GET /metrics: Prometheus text by route template, its switch and token, every hook, and
gunicorn's workers summed (prometheus_client's multiprocess mode, set up by the service)."""
import http.client
import os
import signal
import socket
import time

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from saathii.clock import clock
from saathii.domain.sweeper import sweep
from saathii.extensions import db
from saathii.realtime.hub import Connection
from saathii.realtime.session import BoundedSocket

from .processes import rest
from .sockets import FeedClient
from .test_relays import callers_on_every_worker
from .workers import serving_pid, worker_pids

PRESENCE_ROUTE = "/users/<user_id>/presence"


def sample(name, **labels):
    """This process's value of a sample (0 when it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def parse(text):
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_requests_are_counted_by_route_template(client, customer, listener):
    labels = {"method": "GET", "route": PRESENCE_ROUTE, "status": "200"}
    before = sample("saathii_http_requests_total", **labels)
    timed = sample("saathii_http_request_duration_seconds_count", route=PRESENCE_ROUTE)
    path = f"/users/{listener.id}/presence"
    assert client.get(path, headers=customer.headers).status_code == 200
    assert client.get(f"/no/such/{listener.id}").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")  # Prometheus text
    text = response.get_data(as_text=True)
    samples = parse(text)
    assert samples[("saathii_http_requests_total", tuple(sorted(labels.items())))] == before + 1
    assert samples[("saathii_http_request_duration_seconds_count",
                    (("route", PRESENCE_ROUTE),))] == timed + 1
    assert ("saathii_http_requests_total",
            (("method", "GET"), ("route", "unmatched"), ("status", "404"))) in samples
    assert path not in text and "/no/such" not in text  # never a raw path


def test_a_metrics_token_is_required_when_set(app_with):
    client = app_with(METRICS_TOKEN="scrape-secret").test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json == {"detail": "Invalid or expired token"}
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert response.status_code == 200
    assert b"saathii_http_requests_total" in response.data


def test_metrics_can_be_switched_off(app_with):
    client = app_with(METRICS_ENABLED=False).test_client()
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    before = sample("saathii_http_requests_total", **labels)
    assert client.get("/healthz").status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json == {"detail": "Not found"}
    assert sample("saathii_http_requests_total", **labels) == before  # nothing counted


def test_events_heartbeats_and_sweeps_are_counted(app, client, listener, events):
    online = sample("saathii_events_published_total", type="listener_online")
    batches = sample("saathii_heartbeat_batch_size_count")
    beats = sample("saathii_heartbeat_batch_size_sum")
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200
    assert [e.type for e in events] == ["listener_online"]
    assert sample("saathii_events_published_total", type="listener_online") == online + 1
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200
    assert sample("saathii_heartbeat_batch_size_count") >= batches + 1  # the second beat's
    assert sample("saathii_heartbeat_batch_size_sum") >= beats + 1

    sweeps = sample("saathii_sweeps_total", outcome="ok")
    swept_time = sample("saathii_sweep_duration_seconds_count")
    offline = sample("saathii_users_taken_offline_total")
    clock.advance(app.config["PRESENCE_TIMEOUT_SECONDS"] + 1)
    with app.app_context():
        assert sweep().taken_offline == 1
        db.session.remove()
    assert sample("saathii_sweeps_total", outcome="ok") == sweeps + 1
    assert sample("saathii_sweep_duration_seconds_count") == swept_time + 1
    assert sample("saathii_users_taken_offline_total") == offline + 1


def test_refusals_by_a_rate_limit_are_counted(app_with, listener):
    client = app_with(RATELIMIT_ENABLED=True, RATELIMIT_HEARTBEAT="1 per minute").test_client()
    before = sample("saathii_rate_limited_total", limit="heartbeat")
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 429
    assert sample("saathii_rate_limited_total", limit="heartbeat") == before + 1


def test_sockets_closed_as_too_slow_are_counted():
    before = sample("saathii_feed_sockets_closed_slow_total", reason="queue_full")
    connection = Connection(ws=None, user_id=1, max_queued=1)
    for n in range(3):
        connection.deliver({"favorite": n}, event_id=n + 1)
    assert connection.closing == (1008, "Too slow")
    assert sample("saathii_feed_sockets_closed_slow_total", reason="queue_full") == before + 1

    before = sample("saathii_feed_sockets_closed_slow_total", reason="send_timeout")
    ours, theirs = socket.socketpair()  # theirs never reads
    ours.setblocking(False)  # as gevent's sockets are underneath
    try:
        with pytest.raises(TimeoutError):
            BoundedSocket(ours, timeout=0.2).send(b"x" * 10_000_000)
    finally:
        ours.close()
        theirs.close()
    assert sample("saathii_feed_sockets_closed_slow_total", reason="send_timeout") == before + 1


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_feed_sockets_deliveries_and_the_relay_are_counted(client, connect, listener):
    open_before = sample("saathii_feed_sockets")
    delivered = sample("saathii_events_delivered_total")
    feed = connect(listener)  # the listener's own socket gets their presence events
    assert sample("saathii_feed_sockets") == open_before + 1
    wait_for(lambda: sample("saathii_relay_up") == 1)  # PostgreSQL's relay, or none
    response = client.put("/both/status/me", json={"is_online": True}, headers=listener.headers)
    assert response.status_code == 200
    assert feed.receive()["type"] == "listener_online"
    # Counted once dispatch has queued it for every socket: maybe after it was sent.
    wait_for(lambda: sample("saathii_events_delivered_total") >= delivered + 1)
    assert sample("saathii_events_delivered_total") == delivered + 1
    feed.close()
    wait_for(lambda: sample("saathii_feed_sockets") == open_before)


def scrape(connection):
    """GET /metrics on a kept-alive connection: its samples."""
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    assert response.status == 200
    return parse(response.read().decode())


HEALTHZ = ("saathii_http_requests_total",
           (("method", "GET"), ("route", "/healthz"), ("status", "200")))


def served_by(base, pid, account):
    """Whether a new connection's request was served by a worker."""
    connection = http.client.HTTPConnection(base, timeout=10)
    try:
        assert rest(base, "GET", "/healthz", account, connection=connection)[0] == 200
        return serving_pid(connection.sock, [pid], timeout=0.2) == pid
    finally:
        connection.close()


def test_workers_are_summed_and_a_dead_workers_sockets_stop_counting(
        web_process, customer, tmp_path):
    temp = tmp_path / "temp"
    temp.mkdir()
    base = web_process(workers=2, TMPDIR=temp)
    pids = worker_pids(web_process.masters[-1], 2)
    connections = callers_on_every_worker(base, pids, customer)  # kept alive, one a worker
    for connection in connections.values():  # 3 probes on each worker
        for _ in range(3):
            connection.request("GET", "/healthz")
            assert connection.getresponse().read() == b'{"status":"ok"}\n'
    (directory,) = temp.glob("saathii-metrics-*")  # made by this start, for its workers
    assert {path.name.split("_")[0] for path in directory.iterdir()} >= {"counter", "gauge"}
    for connection in connections.values():  # either worker answers the sum of both
        assert scrape(connection)[HEALTHZ] == 6

    feed = FeedClient(base, customer.token)
    assert feed.receive(timeout=10)["type"] == "connection_established"
    holder = serving_pid(feed.ws.sock, pids)
    survivor = connections[next(pid for pid in pids if pid != holder)]
    assert scrape(survivor)[("saathii_feed_sockets", ())] == 1
    os.kill(holder, signal.SIGKILL)
    wait_for(lambda: scrape(survivor)[("saathii_feed_sockets", ())] == 0)
    assert scrape(survivor)[HEALTHZ] == 6  # its counters still count
    feed.close()
    # The replacement worker serves before the stop (gunicorn loses a TERM that comes
    # while a worker boots, and waits its graceful timeout for it).
    (new,) = set(worker_pids(web_process.masters[-1], 2)) - set(pids)
    wait_for(lambda: served_by(base, new, customer))
    for connection in connections.values():
        connection.close()  # or the workers wait for them to stop

    master = web_process.processes[-1]
    master.terminate()
    master.wait(20)
    assert not directory.exists()  # removed when the service stops
