"""The feed socket, against a live server: who gets which event, and nobody else."""
import http.client
import json
import re
import socket as raw_socket
import threading
import time

import pytest
import simple_websocket

from saathii.events import stored_events
from saathii.realtime import KEY as REALTIME_KEY

from .sockets import FeedClient, raw_feed

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def upgrade_response(live_server, path):
    """Ask for a websocket upgrade over plain HTTP; return the HTTP response."""
    connection = http.client.HTTPConnection(live_server, timeout=5)
    connection.request("GET", path, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    return connection.getresponse()


def upgrade(live_server, path):
    """Ask for a websocket upgrade over plain HTTP; return (status, body)."""
    response = upgrade_response(live_server, path)
    return response.status, response.read()


@pytest.mark.parametrize("query", ["", "?token=", "?token=garbage", "?token=a.b.c"])
def test_bad_token_gets_401_and_no_socket(live_server, query):
    status, body = upgrade(live_server, f"/ws/feed{query}")
    assert status == 401
    assert json.loads(body) == {"detail": "Invalid or expired token"}


def test_bad_since_gets_400(live_server, customer):
    status, body = upgrade(live_server, f"/ws/feed?token={customer.token}&since=-1")
    assert status == 400
    assert json.loads(body) == {"detail": "since must be the id of the last event received"}


def test_a_closed_socket_ends_with_the_close_frame_alone(live_server, customer):
    """Nothing follows the close handshake (an HTTP response there is what browsers call
    "Invalid frame header"), and the server then closes the connection."""
    host, port = live_server.split(":")
    sock = raw_socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        f"GET /ws/feed?token={customer.token} HTTP/1.1\r\nHost: {live_server}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    received = b""
    while not (b"connection_established" in received and received.endswith(b"}")):
        received += sock.recv(4096)  # the whole greeting frame, however TCP splits it
    assert received.startswith(b"HTTP/1.1 101 ")
    mask = b"\x01\x02\x03\x04"
    code = (1000).to_bytes(2, "big")
    sock.sendall(b"\x88\x82" + mask + bytes(b ^ mask[i] for i, b in enumerate(code)))
    after = b""
    while chunk := sock.recv(4096):  # ends when the server closes the connection
        after += chunk
    sock.close()
    assert after == b"\x88\x02" + code  # the close frame, unmasked, and nothing else


def test_plain_get_is_told_to_upgrade(client, customer):
    response = client.get(f"/ws/feed?token={customer.token}")
    assert response.status_code == 400
    assert response.json == {"detail": "This endpoint needs a WebSocket upgrade"}


def test_connect_on_both_paths(connect, customer):
    for path in ("/ws/feed", "/ws/presence"):
        socket = connect(customer, path=path)
        socket.expect_nothing_queued()


def test_envelope_of_the_greeting(live_server, customer):
    socket = FeedClient(live_server, customer.token)
    hello = socket.receive()
    socket.close()
    assert set(hello) == {"type", "data", "timestamp"}
    assert hello["type"] == "connection_established"
    assert re.fullmatch(ISO, hello["timestamp"])


def test_favorite_events_reach_every_socket_of_the_listener_and_nobody_else(
        client, connect, customer, listener, make_user):
    bystander = make_user("meera_k", "listener")
    listener_phone, listener_tablet = connect(listener), connect(listener)
    customer_socket, bystander_socket = connect(customer), connect(bystander)
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    for socket in (listener_phone, listener_tablet):
        event = socket.receive()
        assert set(event) == {"type", "data", "timestamp", "id"}
        assert event["type"] == "favorite_added"
        assert event["data"] == {"user_id": customer.id, "username": "john_doe",
                                 "action": "added_you_to_favorites"}
        assert isinstance(event["id"], int) and re.fullmatch(ISO, event["timestamp"])
    # An idempotent repeat sends nothing.
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    for socket in (listener_phone, listener_tablet, customer_socket, bystander_socket):
        socket.expect_nothing_queued()
    client.delete("/favorites/remove", json={"listener_id": listener.id},
                  headers=customer.headers)
    removed = listener_phone.receive()
    assert (removed["type"], removed["data"]["action"]) == (
        "favorite_removed", "removed_you_from_favorites")
    assert listener_tablet.receive()["type"] == "favorite_removed"
    client.delete("/favorites/remove", json={"listener_id": listener.id},
                  headers=customer.headers)
    for socket in (listener_phone, customer_socket, bystander_socket):
        socket.expect_nothing_queued()


def test_presence_reaches_fans_and_own_sockets_only(
        client, connect, customer, listener, make_user):
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    stranger = make_user("priya_s", "customer")
    fan, stranger_socket, own = connect(customer), connect(stranger), connect(listener)
    client.post("/both/status/heartbeat", headers=listener.headers)
    for socket in (fan, own):
        event = socket.receive()
        assert event["type"] == "listener_online"
        assert set(event) == {"type", "data", "timestamp"}
        data = event["data"]
        assert re.fullmatch(ISO, data.pop("last_seen"))
        assert data == {"user_id": listener.id, "username": "jane_smith", "is_online": True,
                        "is_busy": False, "wait_time": None, "is_available": True,
                        "version": 2}  # created (1), brought online (2)
    stranger_socket.expect_nothing_queued()
    # A heartbeat that changes nothing sends nothing.
    client.post("/both/status/heartbeat", headers=listener.headers)
    for socket in (fan, own, stranger_socket):
        socket.expect_nothing_queued()
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 5},
               headers=listener.headers)
    busy = fan.receive()
    assert (busy["type"], busy["data"]["is_busy"], busy["data"]["wait_time"],
            busy["data"]["is_available"]) == ("listener_busy", True, 5, False)
    client.put("/both/status/me", json={"is_busy": False}, headers=listener.headers)
    assert fan.receive()["type"] == "listener_available"
    client.put("/both/status/me", json={"is_online": False}, headers=listener.headers)
    assert fan.receive()["type"] == "listener_offline"
    assert [own.receive()["type"] for _ in range(3)] == [
        "listener_busy", "listener_available", "listener_offline"]
    stranger_socket.expect_nothing_queued()


def test_customers_presence_is_presence_update(client, connect, customer):
    own = connect(customer)
    client.post("/both/status/heartbeat", headers=customer.headers)
    assert own.receive()["type"] == "presence_update"


def test_watching_follows_favorite_changes(client, connect, customer, listener):
    fan = connect(customer)
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    client.post("/both/status/heartbeat", headers=listener.headers)
    assert fan.receive()["type"] == "listener_online"
    client.delete("/favorites/remove", json={"listener_id": listener.id},
                  headers=customer.headers)
    client.put("/both/status/me", json={"is_online": False}, headers=listener.headers)
    fan.expect_nothing_queued()


def test_subscribe_to_user_ids(client, connect, customer, listener, make_user):
    other = make_user("meera_k", "listener")
    watcher = connect(customer)
    watcher.send({"type": "subscribe", "user_ids": [listener.id, other.id]})
    confirmed = watcher.receive()
    assert confirmed["type"] == "subscription_confirmed"
    assert confirmed["data"] == {"user_ids": sorted([listener.id, other.id]), "feed": False}
    client.post("/both/status/heartbeat", headers=other.headers)
    assert watcher.receive()["data"]["user_id"] == other.id
    # A new list replaces the old one.
    watcher.send({"type": "subscribe", "user_ids": [listener.id]})
    assert watcher.receive()["data"] == {"user_ids": [listener.id], "feed": False}
    client.put("/both/status/me", json={"is_online": False}, headers=other.headers)
    client.post("/both/status/heartbeat", headers=listener.headers)
    assert watcher.receive()["data"]["user_id"] == listener.id
    watcher.send({"type": "unsubscribe", "user_ids": [listener.id]})
    assert watcher.receive()["data"] == {"user_ids": [], "feed": False}
    client.put("/both/status/me", json={"is_online": False}, headers=listener.headers)
    watcher.expect_nothing_queued()


def test_feed_subscription_gets_every_listener_but_no_customers(
        client, connect, customer, listener, make_user):
    another_customer = make_user("priya_s", "customer")
    discovery = connect(customer)
    discovery.send({"type": "subscribe", "subscription": "feed"})
    assert discovery.receive()["data"] == {"user_ids": [], "feed": True}
    client.post("/both/status/heartbeat", headers=listener.headers)
    assert discovery.receive()["type"] == "listener_online"
    client.post("/both/status/heartbeat", headers=another_customer.headers)
    discovery.expect_nothing_queued()
    discovery.send({"type": "unsubscribe", "subscription": "feed"})
    assert discovery.receive()["data"] == {"user_ids": [], "feed": False}
    client.put("/both/status/me", json={"is_online": False}, headers=listener.headers)
    discovery.expect_nothing_queued()


def test_ping_is_a_heartbeat(client, connect, customer, listener):
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    fan, own = connect(customer), connect(listener)
    own.send({"type": "ping", "data": {}})
    messages = [own.receive(), own.receive()]
    assert sorted(m["type"] for m in messages) == ["listener_online", "pong"]
    pong = next(m for m in messages if m["type"] == "pong")
    assert pong["data"] == {} and re.fullmatch(ISO, pong["timestamp"])
    assert fan.receive()["type"] == "listener_online"
    status = client.get("/both/status/me", headers=listener.headers).json
    assert status["is_online"] is True


@pytest.mark.parametrize("raw, reason", [
    ("not json", "message is not valid JSON"),
    ("[1, 2]", "message must be a JSON object"),
    ('{"type": "dance"}', "type: Must be one of: ping, subscribe, unsubscribe"),
    ('{"no": "type"}', "type: Missing data for required field; no: Unknown field"),
    ('{"type": "subscribe"}', "subscribe takes either user_ids or subscription"),
    ('{"type": "subscribe", "user_ids": "1,2"}', "user_ids: Not a valid list"),
    ('{"type": "subscribe", "user_ids": [0]}', "user_ids: invalid value"),
    ('{"type": "subscribe", "subscription": "all"}', "subscription: Must be one of: feed"),
    ('{"type": "subscribe", "user_ids": ' + json.dumps(list(range(1, 502))) + "}",
     "user_ids: At most 500 user ids"),
])
def test_bad_messages_get_an_error_and_keep_the_socket(connect, customer, raw, reason):
    socket = connect(customer)
    socket.send(raw)
    error = socket.receive()
    assert error["type"] == "error"
    assert error["data"] == {"code": "INVALID_MESSAGE", "message": reason}
    socket.expect_nothing_queued()


def test_oversized_message_closes_with_1009(connect, customer):
    socket = connect(customer)
    socket.send('{"type": "ping", "data": "' + "x" * 17000 + '"}')
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        socket.ws.receive(timeout=5)
        socket.ws.receive(timeout=5)
    assert closed.value.reason == 1009


def test_replay_since(client, connect, customer, listener, make_user):
    other = make_user("priya_s", "customer")
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=other.headers)
    client.delete("/favorites/remove", json={"listener_id": listener.id},
                  headers=customer.headers)
    everything = connect(listener, since=0)
    replayed = [everything.receive() for _ in range(3)]
    assert [(e["type"], e["data"]["username"]) for e in replayed] == [
        ("favorite_added", "john_doe"), ("favorite_added", "priya_s"),
        ("favorite_removed", "john_doe")]
    ids = [e["id"] for e in replayed]
    assert ids == sorted(ids)
    everything.expect_nothing_queued()
    resumed = connect(listener, since=ids[0])
    assert [resumed.receive()["id"] for _ in range(2)] == ids[1:]
    resumed.expect_nothing_queued()
    # Then live events follow, once each.
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    live = resumed.receive()
    assert live["type"] == "favorite_added" and live["id"] > ids[-1]
    resumed.expect_nothing_queued()
    up_to_date = connect(listener, since=live["id"])
    up_to_date.expect_nothing_queued()


def test_the_greeting_gives_a_cursor_to_resume_from(client, connect, customer, listener,
                                                    make_user):
    assert connect(listener).hello["data"]["last_event_id"] is None  # nothing stored yet
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    first = connect(listener)  # no since: live events only, and the cursor they start from
    cursor = first.hello["data"]["last_event_id"]
    assert isinstance(cursor, int)
    first.expect_nothing_queued()
    first.close()  # dropped; meanwhile another customer favorites the listener
    other = make_user("priya_s", "customer")
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=other.headers)
    resumed = connect(listener, since=cursor)
    missed = resumed.receive()
    assert (missed["type"], missed["data"]["username"]) == ("favorite_added", "priya_s")
    assert resumed.hello["data"]["last_event_id"] == missed["id"] > cursor
    resumed.expect_nothing_queued()
    assert connect(customer).hello["data"]["last_event_id"] is None  # per recipient


def test_replay_is_per_recipient(client, connect, customer, listener, make_user):
    other_listener = make_user("meera_k", "listener")
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    connect(other_listener, since=0).expect_nothing_queued()
    connect(customer, since=0).expect_nothing_queued()


def test_a_peer_that_stops_answering_pings_is_dropped(app, live_server, customer):
    """The server pings every FEED_PING_INTERVAL_SECONDS; a peer that never answers is
    closed by the next ping and leaves the hub."""
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config["SOCK_SERVER_OPTIONS"],
                                         "ping_interval": 0.2}
    raw = raw_feed(live_server, customer.token)
    hub = realtime_of(app).hub
    deadline = time.monotonic() + 5
    while hub.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hub.count() == 1
    received = b""
    raw.settimeout(5)
    while True:  # read (and never answer) until the server closes the connection
        chunk = raw.recv(4096)
        if not chunk:
            break
        received += chunk
    raw.close()
    assert b" 101 " in received.split(b"\r\n", 1)[0]
    assert b"\x89" in received  # a ping frame (FIN + opcode 9) came before the close
    deadline = time.monotonic() + 5
    while hub.count() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert hub.count() == 0


def realtime_of(app):
    return app.extensions[REALTIME_KEY]


def test_a_socket_opening_while_the_process_stops_is_refused_with_503(app, live_server,
                                                                        connect, customer):
    """On SIGTERM (gunicorn.conf.py) open sockets get 1012; one that opens before the
    worker stops accepting gets a 503 rather than a socket nobody would close."""
    held = connect(customer)
    realtime_of(app).shut_down()
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        held.ws.receive(timeout=5)
    assert closed.value.reason == 1012
    response = upgrade_response(live_server, f"/ws/feed?token={customer.token}")
    assert response.status == 503
    assert response.getheader("Retry-After") in {"1", "2", "3"}  # jittered
    assert json.loads(response.read()) == {"detail": "Service restarting, connect again"}
    deadline = time.monotonic() + 5
    while realtime_of(app).hub.count() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert realtime_of(app).hub.count() == 0


@pytest.mark.parametrize("committed", ["before the read", "after the read"])
@pytest.mark.parametrize("since", [None, 0])
def test_an_event_committed_while_the_greeting_is_read_arrives_once(
        app, monkeypatch, connect, customer, listener, committed, since):
    """The socket is in the hub before its greeting is read: an event committed just
    before the read is in last_event_id (and in the replay from since=0; without a
    cursor it is history, as for a client reconnecting from last_event_id), one
    committed just after arrives live; never twice."""
    from saathii.domain import favorite_changes, favorites
    from saathii.realtime import session

    def favorite():  # another request, on its own thread
        def commit():
            with app.app_context():
                favorite_changes.commit(favorites.ADDED, customer.id, listener.id)
        worker = threading.Thread(target=commit)
        worker.start()
        worker.join(10)

    read = session.greeting_data

    def reading_with_a_commit(user_id):
        if committed == "before the read":
            favorite()
        data = read(user_id)
        if committed == "after the read":
            favorite()
        return data

    monkeypatch.setattr(session, "greeting_data", reading_with_a_commit)
    socket = connect(listener, since=since)
    if since is None and committed == "before the read":
        with app.app_context():
            (stored,) = stored_events(listener.id, 0)
        assert socket.hello["data"]["last_event_id"] == stored.id
        socket.expect_nothing_queued()
        return
    event = socket.receive()
    assert (event["type"], event["data"]["username"]) == ("favorite_added", "john_doe")
    assert socket.hello["data"]["last_event_id"] == (
        event["id"] if committed == "before the read" else None)
    socket.expect_nothing_queued()


def test_the_greeting_is_one_statement_and_an_up_to_date_cursor_costs_no_replay(
        client, connect, executed, customer, listener):
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    cursor = connect(listener).hello["data"]["last_event_id"]  # the relay is listening now
    executed.clear()
    up_to_date = connect(listener, since=cursor)
    up_to_date.expect_nothing_queued()
    assert len(executed) == 1, executed
    watching = connect(customer)  # its favorites come in the same statement
    assert len(executed) == 2, executed
    client.post("/both/status/heartbeat", headers=listener.headers)
    assert watching.receive()["type"] == "listener_online"
