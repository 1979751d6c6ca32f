"""A relay that stalls or resets between two processes (a TCP proxy the test controls in
front of one process's Redis or PostgreSQL): the process notices within seconds (readiness
and saathii_relay_up), and once the relay is back its sockets get what they missed:
every stored favorite event once, in order, and the current presence."""
import http.client
import json
import time

import pytest
import sqlalchemy as sa

from saathii.extensions import db
from saathii.models import FeedEvent

from .processes import read_logs_until, rest
from .test_multiprocess import open_feed
from .test_stalls import postgres_proxy, redis_proxy  # noqa: F401 - fixtures

FAST_PROBES = {"RELAY_PROBE_SECONDS": "0.3", "RELAY_STALL_SECONDS": "1", "LOG_LEVEL": "INFO"}
CHANGES = 4  # favorite changes made while the relay is down


def probe(base, path):
    """(status, body) of an unauthenticated GET."""
    connection = http.client.HTTPConnection(base, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def relay_state(base):
    """(the relay check of /readyz, saathii_relay_up)."""
    _, ready = probe(base, "/readyz")
    _, metrics = probe(base, "/metrics")
    gauge = next(line for line in metrics.splitlines() if line.startswith("saathii_relay_up"))
    return json.loads(ready)["checks"].get("relay"), float(gauge.split()[-1])


def wait_for_state(base, expected, timeout=20):
    deadline = time.monotonic() + timeout
    while (state := relay_state(base)) != expected:
        assert time.monotonic() < deadline, f"relay state {state}, expected {expected}"
        time.sleep(0.2)


def stored_ids(app, user_id):
    with app.app_context():
        ids = db.session.scalars(sa.select(FeedEvent.id).where(FeedEvent.user_id == user_id)
                                 .order_by(FeedEvent.id)).all()
        db.session.remove()
    return ids


def receive_until(client, done, timeout=20):
    """Messages received until done(messages) holds."""
    received, deadline = [], time.monotonic() + timeout
    while not done(received):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not done in time: {received}"
        raw = client.ws.receive(timeout=remaining)
        if raw is not None:
            received.append(json.loads(raw))
    return received


@pytest.fixture(params=["redis-stall-sockets", "redis-reset-sockets", "notify-stall-sockets",
                        "redis-stall-writer"])
def outage(request, config):
    """(relay, how it fails, environment of the process behind the proxy, proxy, whether
    the sockets (else the writer) are on that process)."""
    relay, kind, behind = request.param.split("-")
    if relay == "redis":
        proxy, url = request.getfixturevalue("redis_proxy")
        return "redis", kind, {"REDIS_URL": url}, proxy, behind == "sockets"
    proxy, url = request.getfixturevalue("postgres_proxy")
    return None, kind, {"DATABASE_URL": url}, proxy, True


def test_a_process_whose_relay_was_down_sends_its_sockets_what_they_missed(
        web_process, app, outage, customer, listener, make_user, tmp_path):
    """The sockets' process cut off from the relay misses the writer's events; or the
    writer's process cannot publish (Redis) and says so once it can, so that the
    sockets' process sends them what changed."""
    relay, kind, behind_proxy, proxy, sockets_behind = outage
    fan = make_user("meera_f", "customer")
    proxied = web_process(relay=relay, **behind_proxy, **FAST_PROBES)
    direct = web_process(relay=relay, **FAST_PROBES)
    cut_off, other = (proxied, direct) if sockets_behind else (direct, proxied)
    wait_for_state(proxied, ("ok", 1.0))
    listener_socket, customer_socket = open_feed(cut_off, listener), open_feed(cut_off, customer)
    try:
        status, _ = rest(other, "POST", "/favorites/add", customer, {"listener_id": listener.id})
        assert status == 200
        first = receive_until(listener_socket, lambda got: got)[0]
        assert first["type"] == "favorite_added"  # the relay carries events across
        # (The customer's socket on the cut-off process now watches the listener.)

        proxy.pause() if kind == "stall" else proxy.cut()
        wait_for_state(proxied, ("down", 0.0))
        for change in range(CHANGES):
            method, path = (("POST", "/favorites/add") if change % 2 == 0
                            else ("DELETE", "/favorites/remove"))
            assert rest(other, method, path, fan, {"listener_id": listener.id})[0] == 200
        # Last: a stalled publisher may still deliver its first message once the relay
        # heals (and a favorite event brings every later one from the store).
        status, body = rest(other, "PUT", "/both/status/me", listener,
                            {"is_online": True, "is_busy": True})
        assert (status, body["is_busy"]) == (200, True)
        if not sockets_behind:  # the writer's publisher gives up: the events are dropped
            read_logs_until(tmp_path, "Redis publish failed")
        expected = stored_ids(app, listener.id)
        assert len(expected) == 1 + CHANGES and expected[0] == first["id"]

        proxy.heal()
        wait_for_state(proxied, ("ok", 1.0))
        # Every favorite event missed, once and in order; then nothing more.
        missed = receive_until(listener_socket, lambda got: len(
            [m for m in got if "id" in m]) >= CHANGES)
        assert [m["id"] for m in missed if "id" in m] == expected[1:]
        assert [m["type"] for m in missed if "id" in m] == ["favorite_added",
                                                             "favorite_removed"] * (CHANGES // 2)
        # The customer's socket ends on the listener's current presence, from REST.
        busy = receive_until(customer_socket, lambda got: any(
            m["data"].get("user_id") == listener.id and m["data"].get("is_busy")
            for m in got))
        status, truth = rest(other, "GET", f"/users/{listener.id}/presence", customer)
        assert status == 200 and truth["is_busy"] is True
        seen = [m for m in busy + customer_socket.drain()
                if m["data"].get("user_id") == listener.id]
        assert seen[-1]["data"]["is_busy"] is True
        assert seen[-1]["data"]["version"] == truth["version"]
        assert not [m for m in listener_socket.drain() if "id" in m]  # none twice
        sockets_log = tmp_path / f"process-{0 if sockets_behind else 1}.log"
        assert "relay back:" in sockets_log.read_text()
    finally:
        proxy.heal()
        listener_socket.close()
        customer_socket.close()
