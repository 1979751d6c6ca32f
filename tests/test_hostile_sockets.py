"""Feed sockets that misbehave are bounded: no compression bomb, no inbound flood, no pile
of sockets per user, pings within the heartbeat budget, and no socket outlives its token
or its account."""
import http.client
import json
import socket as raw_socket
import time
import zlib

import pytest
import simple_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Pong, Request, TextMessage

from saathii.auth import create_access_token
from saathii.clock import clock
from saathii.extensions import db
from saathii.models import UserStatus

from .processes import rest
from .sockets import FeedClient
from .test_auth import remove_user
from .test_feed import realtime_of, upgrade


@pytest.fixture
def config(config):
    class Bounded(config):
        FEED_MAX_SOCKETS_PER_USER = 3
        FEED_MESSAGES_PER_SECOND = 5
        FEED_MESSAGE_BURST = 10
        FEED_ACCOUNT_CHECK_SECONDS = 0.2
        RATELIMIT_ENABLED = True
        RATELIMIT_HEARTBEAT = "3 per minute"

    return Bounded


def closed_with(client, timeout=10):
    """Read until the server closes the socket; return (code, reason)."""
    deadline = time.monotonic() + timeout
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            client.ws.receive(timeout=0.5)
        raise AssertionError("the socket was not closed in time")
    return closed.value.reason, closed.value.message


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def raw_upgrade(base, token, extra_headers=""):
    """Open a socket with wsproto over a raw connection; return (sock, ws, accept)."""
    host, port = base.split(":")
    sock = raw_socket.create_connection((host, int(port)), timeout=5)
    ws = WSConnection(ConnectionType.CLIENT)
    request = ws.send(Request(host=base, target=f"/ws/feed?token={token}"))
    if extra_headers:
        request = request.replace(b"\r\n\r\n", f"\r\n{extra_headers}\r\n\r\n".encode(), 1)
    sock.sendall(request)
    return sock, ws


@pytest.mark.parametrize("drop, detail", [
    ("Sec-WebSocket-Key", "Invalid WebSocket handshake: Sec-WebSocket-Key is missing or "
                          "malformed"),
    ("Sec-WebSocket-Version", "Invalid WebSocket handshake: Sec-WebSocket-Version must be 13"),
])
def test_an_upgrade_without_its_headers_is_a_400(live_server, customer, drop, detail):
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    del headers[drop]
    connection = http.client.HTTPConnection(live_server, timeout=5)
    connection.request("GET", f"/ws/feed?token={customer.token}", headers=headers)
    response = connection.getresponse()
    assert response.status == 400
    assert json.loads(response.read()) == {"detail": detail}


def test_compression_is_not_negotiated_and_the_limit_holds(live_server, customer):
    """A client offering permessage-deflate gets a plain socket, so a small compressed
    frame can never inflate past the 16 KiB limit inside the server."""
    sock, ws = raw_upgrade(live_server, customer.token,
                           "Sec-WebSocket-Extensions: permessage-deflate")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-extensions" not in head.lower()
    # A 50 KB message deflated to a few hundred bytes, sent with RSV1 set as a client
    # that believed compression was on would: refused (the server never inflates it).
    body = zlib.compressobj(wbits=-15)
    payload = body.compress(b'{"type":"ping","data":"' + b"x" * 50_000 + b'"}') + body.flush()
    mask = b"\x01\x02\x03\x04"
    frame = bytes([0xC1, 0xFE]) + len(payload).to_bytes(2, "big") + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(frame)
    received = b""
    sock.settimeout(5)
    while chunk := sock.recv(4096):
        received += chunk
    sock.close()
    assert b"\x88" in received  # a close frame, and the connection ended


def test_a_flooding_socket_is_closed_with_1008(app, connect, customer, listener):
    flooder, bystander = connect(customer), connect(listener)
    for _ in range(200):
        try:
            flooder.send({"type": "unsubscribe", "user_ids": []})
        except (OSError, simple_websocket.ConnectionClosed):
            break  # the server closed it mid-flood
    answers = 0
    with pytest.raises(simple_websocket.ConnectionClosed) as closed:
        while True:
            message = flooder.ws.receive(timeout=5)
            assert message is not None, "the flooding socket was not closed"
            answers += json.loads(message)["type"] == "subscription_confirmed"
    assert (closed.value.reason, closed.value.message) == (1008, "Too many messages")
    assert answers <= 11  # the burst (and a token refilled meanwhile); the rest dropped
    wait_for(lambda: realtime_of(app).hub.count() == 1)
    bystander.expect_nothing_queued()


def masked_frame(opcode, payload, fin=True):
    """One client frame (masked, as RFC 6455 asks of clients) of under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + bytes(
        byte ^ mask[i % 4] for i, byte in enumerate(payload))


def opened(base, token):
    """A raw socket upgraded and greeted, and the client's wsproto connection."""
    sock, ws = raw_upgrade(base, token)
    sock.settimeout(10)
    events = []
    while not any(isinstance(event, TextMessage) for event in events):
        ws.receive_data(sock.recv(65536))
        events += list(ws.events())
    return sock, ws


def until_closed(sock, ws):
    """Every event the server sent until its close frame (or the connection's end)."""
    events = []
    try:
        while not any(isinstance(event, CloseConnection) for event in events):
            chunk = sock.recv(65536)
            ws.receive_data(chunk or None)
            events += list(ws.events())
            if not chunk:
                break
    except ConnectionResetError:
        pass
    sock.close()
    return events


def test_a_ping_frame_flood_is_closed_with_1008_and_mostly_unanswered(
        app, connect, live_server, customer, listener):
    bystander = connect(listener)
    sock, ws = opened(live_server, customer.token)
    sock.sendall(masked_frame(0x9, b"are you there") * 200)
    events = until_closed(sock, ws)
    closes = [event for event in events if isinstance(event, CloseConnection)]
    assert [(close.code, close.reason) for close in closes][:1] == [(1008, "Too many messages")]
    assert sum(isinstance(event, Pong) for event in events) <= 11  # the burst, no more
    wait_for(lambda: realtime_of(app).hub.count() == 1)
    bystander.expect_nothing_queued()


def test_a_flood_of_fragments_is_closed_with_1008(app, connect, live_server, customer,
                                                  listener):
    """A message that never ends (empty continuation frames, forever) spends the budget
    fragment by fragment."""
    bystander = connect(listener)
    sock, ws = opened(live_server, customer.token)
    sock.sendall(masked_frame(0x1, b"", fin=False) + masked_frame(0x0, b"", fin=False) * 200)
    closes = [event for event in until_closed(sock, ws) if isinstance(event, CloseConnection)]
    assert [(close.code, close.reason) for close in closes][:1] == [(1008, "Too many messages")]
    wait_for(lambda: realtime_of(app).hub.count() == 1)
    bystander.expect_nothing_queued()


def test_pings_within_the_rate_are_answered(live_server, customer):
    sock, ws = opened(live_server, customer.token)
    sock.sendall(masked_frame(0x9, b"one") + masked_frame(0x9, b"two"))
    pongs = []
    while len(pongs) < 2:
        ws.receive_data(sock.recv(65536))
        pongs += [bytes(event.payload) for event in ws.events() if isinstance(event, Pong)]
    assert pongs == [b"one", b"two"]
    sock.close()


@pytest.mark.parametrize("frame, code", [
    (masked_frame(0x1, b'{"type": "ping", "x": "\xff\xfe"}'), 1007),  # invalid UTF-8
    (masked_frame(0x3, b"reserved"), 1002),  # an opcode RFC 6455 reserves
    (masked_frame(0x9, b"x", fin=False), 1002),  # a control frame fragmented
])
@pytest.mark.parametrize("server", ["development", "gunicorn"])
def test_a_protocol_error_closes_with_its_code(request, customer, frame, code, server):
    base = (request.getfixturevalue("live_server") if server == "development"
            else request.getfixturevalue("web_process")(relay=None))
    sock, ws = opened(base, customer.token)
    sock.sendall(frame)
    closes = [event for event in until_closed(sock, ws) if isinstance(event, CloseConnection)]
    assert [close.code for close in closes][:1] == [code]


def test_messages_within_the_rate_are_all_answered(connect, customer):
    client = connect(customer)
    for _ in range(4):
        for _ in range(5):
            client.send({"type": "unsubscribe", "user_ids": []})
        for _ in range(5):
            assert client.receive()["type"] == "subscription_confirmed"
        time.sleep(1)  # 5 a second is the rate: never closed
    client.expect_nothing_queued()


def test_a_new_socket_past_the_cap_closes_the_oldest(app, connect, customer):
    sockets = [connect(customer) for _ in range(3)]
    newest = connect(customer)
    assert closed_with(sockets[0]) == (
        1008, "Too many sockets for this user; the oldest was closed")
    for client in sockets[1:] + [newest]:
        client.expect_nothing_queued()
    wait_for(lambda: realtime_of(app).hub.count() == 3)


def test_pings_spend_the_heartbeat_budget(app, client, connect, listener):
    own = connect(listener)
    own.send({"type": "ping"})
    assert {own.receive()["type"], own.receive()["type"]} == {"pong", "listener_online"}
    for _ in range(2):
        own.send({"type": "ping"})
        assert own.receive()["type"] == "pong"
    with app.app_context():
        seen = db.session.get(UserStatus, listener.id).last_seen
    clock.advance(seconds=30)  # the clock is frozen: move it, so a write would show
    own.send({"type": "ping"})  # beyond the budget: answered, nothing written
    assert own.receive()["type"] == "pong"
    own.expect_nothing_queued()
    with app.app_context():
        assert db.session.get(UserStatus, listener.id).last_seen == seen
    response = client.post("/both/status/heartbeat", headers=listener.headers)
    assert response.status_code == 429
    assert response.json == {"detail": "Too many requests"}


def test_a_deactivated_users_socket_is_closed_and_its_ping_changes_nothing(
        app, live_server, connect, customer, listener):
    realtime_of(app).guard.stop()  # the ping alone must notice
    own, fan = connect(listener), connect(customer)
    status, _ = rest(live_server, "POST", "/favorites/add", customer,
                     {"listener_id": listener.id})
    assert status == 200
    remove_user(app, listener.id, "deactivate")
    own.send({"type": "ping"})  # not online yet: the ping would set them online
    assert closed_with(own) == (1008, "Account deactivated")
    with app.app_context():
        assert db.session.get(UserStatus, listener.id).is_online is False
    fan.expect_nothing_queued()  # no listener_online went out


@pytest.mark.parametrize("change", ["deactivate", "delete"])
def test_the_guard_closes_sockets_of_accounts_that_are_gone(app, connect, customer, listener,
                                                             change):
    gone, staying = connect(customer), connect(listener)
    remove_user(app, customer.id, change)
    assert closed_with(gone) == (1008, "Account deactivated")  # FEED_ACCOUNT_CHECK_SECONDS
    staying.expect_nothing_queued()
    wait_for(lambda: realtime_of(app).hub.count() == 1)


def test_a_socket_ends_when_its_token_expires(app, live_server, customer):
    with app.app_context():
        token = create_access_token(customer.id, expires_in=5)
    client = FeedClient(live_server, token)
    assert client.receive()["type"] == "connection_established"
    client.expect_nothing_queued()
    assert closed_with(client) == (1008, "Token expired")
    status, body = upgrade(live_server, f"/ws/feed?token={token}")
    assert (status, json.loads(body)) == (401, {"detail": "Invalid or expired token"})
