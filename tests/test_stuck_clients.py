"""A frozen or hostile feed client hurts no one else: its socket alone waits, and only
for FEED_SEND_TIMEOUT_SECONDS; presence is coalesced, so bursts close no healthy socket."""
import errno
import json
import re
import selectors
import signal
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import simple_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

from config import Config
from saathii.events import Event
from saathii.realtime.hub import Connection, Hub
from saathii.realtime.session import BoundedSocket, wind_down

from .processes import rest
from .sockets import FeedClient


@pytest.fixture
def config(config):
    class Bounded(config):
        FEED_SEND_TIMEOUT_SECONDS = 1
        FEED_MAX_QUEUED = 50

    return Bounded


def frozen_client(base, token, subscribe):
    """A feed socket that sends its messages, then never reads (a tiny receive buffer);
    returns the raw socket and its wsproto connection (to send more frames with)."""
    host, port = base.split(":")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    raw.connect((host, int(port)))
    ws = WSConnection(ConnectionType.CLIENT)
    raw.sendall(ws.send(Request(host=base, target=f"/ws/feed?token={token}")))
    ws.receive_data(raw.recv(4096))  # the 101 (and perhaps the greeting)
    raw.sendall(ws.send(TextMessage(data=subscribe)))
    return raw, ws


def presence(user_id, busy, padding=""):
    kind = "listener_busy" if busy else "listener_available"
    return Event(kind, {"user_id": user_id, "is_busy": busy, "bio": padding},
                 subject_id=user_id)


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_socket_that_stops_reading_stalls_no_one(app, live_server, connect, listener,
                                                   customer, make_user):
    realtime = app.extensions["saathii_realtime"]
    frozen, _ = frozen_client(live_server, listener.token,
                              '{"type": "subscribe", "subscription": "feed"}')
    healthy = connect(customer)
    healthy.send({"type": "subscribe", "subscription": "feed"})
    assert healthy.receive()["type"] == "subscription_confirmed"
    wait_for(lambda: realtime.hub.count() == 2)
    subjects = [make_user(f"busy_{n}", "listener").id for n in range(30)]

    padding = "x" * 4096  # until the kernel's buffers toward the frozen client are full
    latest, reading = {}, threading.Event()
    reading.set()

    def read():  # the healthy client reads all along, as a healthy phone does
        while reading.is_set():
            try:
                message = healthy.receive(timeout=0.5)
            except AssertionError:
                continue
            if message["type"].startswith("listener_"):
                latest[message["data"]["user_id"]] = message["data"]["is_busy"]

    def flood():  # what requests, the relay and the sweeper do: dispatch
        with app.app_context():
            deadline, round_ = time.monotonic() + 30, 0
            while realtime.hub.count() == 2 and time.monotonic() < deadline:
                round_ += 1
                for user_id in subjects:
                    realtime.publish(presence(user_id, round_ % 2 == 0, padding))
                if round_ < 40:  # fewer than FEED_MAX_QUEUED: the send timeout closes it
                    realtime.publish(Event("favorite_added", {"user_id": customer.id,
                                                              "username": "john_doe"},
                                           subject_id=listener.id))
            for user_id in subjects:
                realtime.publish(presence(user_id, False))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    dispatcher = threading.Thread(target=flood, daemon=True)
    dispatcher.start()
    dispatcher.join(60)
    assert not dispatcher.is_alive(), "dispatching waited on a frozen socket"
    # The frozen socket was closed by its send timeout; the healthy one is open and
    # ends with every user's latest presence.
    wait_for(lambda: realtime.hub.count() == 1)
    wait_for(lambda: latest == {user_id: False for user_id in subjects})
    reading.clear()
    reader.join(5)
    healthy.expect_nothing_queued()
    # Requests still answer, and their events still arrive.
    status, body = rest(live_server, "PUT", "/both/status/me", customer, {"is_online": True})
    assert (status, body["is_online"]) == (200, True)
    assert healthy.receive()["type"] == "presence_update"
    frozen.close()


def test_presence_is_coalesced_and_other_messages_are_bounded():
    connection = Connection(ws=None, user_id=1, max_queued=3)
    for round_ in range(1000):  # a sweep of 5,000 listeners, twice over
        for user_id in range(5000):
            if round_ < 2:
                connection.deliver({"n": round_, "user": user_id}, presence_of=user_id)
        if round_ >= 2:
            break
    assert connection.queued() == 5000 and connection.closing is None
    first = connection.pending[("presence", 0)]
    assert first == ({"n": 1, "user": 0}, None)  # the latest presence, in its place
    for n in range(3):
        connection.deliver({"favorite": n}, event_id=n + 1)
    assert connection.closing is None
    connection.deliver({"favorite": 3}, event_id=4)  # one more than max_queued
    assert connection.closing == (1008, "Too slow")


def test_a_deeply_nested_message_is_refused_and_the_socket_stays(connect, customer):
    client = connect(customer)
    client.send("[" * 5000 + "]" * 5000)
    error = client.receive()
    assert (error["type"], error["data"]["code"]) == ("error", "INVALID_MESSAGE")
    client.expect_nothing_queued()


def test_a_cursor_beyond_the_newest_event_is_a_reset(live_server, customer, listener):
    status, _ = rest(live_server, "POST", "/favorites/add", customer,
                     {"listener_id": listener.id})
    assert status == 200
    client = FeedClient(live_server, listener.token, since=1000)
    try:
        hello = client.receive()
        assert hello["type"] == "connection_established"
        assert hello["data"]["cursor_reset"] is True
        newest = hello["data"]["last_event_id"]
        assert newest is not None and newest < 1000
        status, _ = rest(live_server, "DELETE", "/favorites/remove", customer,
                         {"listener_id": listener.id})
        assert status == 200
        removed = client.receive()
        assert (removed["type"], removed["id"]) == ("favorite_removed", newest + 1)
    finally:
        client.close()


def test_a_frozen_socket_stalls_no_one_under_gunicorn(web_process, customer, listener,
                                                      make_user):
    """The same under the Procfile's web command (gevent): a client that never reads while
    its answers pile up (3.5 KB confirmations of 500-id subscriptions, past the kernel's
    buffers) is closed by its send timeout; meanwhile REST and other sockets are served."""
    server = web_process(workers=1, relay=None, FEED_SEND_TIMEOUT_SECONDS=1,
                         FEED_MESSAGES_PER_SECOND=100_000, FEED_MESSAGE_BURST=100_000,
                         FEED_MAX_QUEUED=100_000)
    healthy = FeedClient(server, customer.token)
    assert healthy.receive()["type"] == "connection_established"
    healthy.send({"type": "subscribe", "subscription": "feed"})
    assert healthy.receive()["type"] == "subscription_confirmed"
    toggling = [make_user(f"toggling_{n}", "listener") for n in range(4)]
    subscribe = json.dumps({"type": "subscribe", "user_ids": list(range(1, 501))})
    frozen, ws = frozen_client(server, listener.token, subscribe)
    frame = ws.send(TextMessage(data=subscribe))
    try:
        for _ in range(800):  # about 2.8 MB of answers, none of them read
            try:
                frozen.sendall(frame)
            except OSError:  # the server gave up on it already (a slow machine)
                break
        for round_ in range(6):  # others are served all along, and hear every change
            for account in toggling:
                change = {"is_busy": round_ % 2 == 0}
                if round_ == 5:  # a last state no earlier one looks like
                    change = {"is_busy": True, "wait_time": 7}
                status, body = rest(server, "PUT", "/both/status/me", account, change)
                assert (status, body["is_busy"]) == (200, change["is_busy"])
        final = {account.id: (True, 7) for account in toggling}
        latest = {}
        while latest != final:
            message = healthy.receive(timeout=10)
            if message["type"].startswith("listener_"):
                data = message["data"]
                latest[data["user_id"]] = (data["is_busy"], data["wait_time"])
        healthy.expect_nothing_queued()
        # The server gave up on it and reset the connection (read without reading: a
        # client that drained now would no longer be frozen).
        wait_for(lambda: frozen.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                 == errno.ECONNRESET, timeout=60)
    finally:
        frozen.close()
        healthy.close()



def test_sigterm_closes_sockets_with_1012_and_finishes_requests(web_process, customer,
                                                                listener):
    """A graceful restart hurts no one: in-flight requests finish, and every feed socket
    is closed with 1012 (service restart) at once, so its client reconnects at once."""
    server = web_process(workers=1, relay=None)
    sockets = [FeedClient(server, account.token) for account in (customer, listener)]
    for client in sockets:
        assert client.receive()["type"] == "connection_established"
    host, port = server.split(":")
    in_flight = socket.create_connection((host, int(port)), timeout=30)
    body = b'{"is_online": true}'
    in_flight.sendall((f"PUT /both/status/me HTTP/1.1\r\nHost: {server}\r\n"
                       f"Authorization: Bearer {listener.token}\r\n"
                       "Content-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:5])
    time.sleep(1)  # the request is in
    web_process.processes[-1].send_signal(signal.SIGTERM)
    for client in sockets:
        with pytest.raises(simple_websocket.ConnectionClosed) as closed:
            while True:
                assert client.ws.receive(timeout=10) is not None, "not closed in time"
        assert closed.value.reason == 1012
        assert re.fullmatch(r"Service restart; reconnect in (\d+) ms", closed.value.message)
    in_flight.sendall(body[5:])  # the in-flight request still completes
    answer = b""
    while b"}" not in answer:
        chunk = in_flight.recv(65536)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"is_online":true' in answer
    in_flight.close()
    assert web_process.processes[-1].wait(20) == 0


def test_a_busy_socket_still_ends_when_its_token_expires():
    connection = Connection(ws=None, user_id=1, max_queued=Config.FEED_MAX_QUEUED,
                            expires_at=time.time() - 1)
    connection.deliver({"n": 1}, presence_of=2)  # always something to send
    assert connection._next() is None
    assert connection.closing == (1008, "Token expired")


def test_a_restart_spreads_its_sockets_reconnects_over_count_over_rate_seconds():
    hub = Hub()
    sockets = [Connection(ws=None, user_id=n, max_queued=Config.FEED_MAX_QUEUED)
               for n in range(100)]
    for connection in sockets:
        hub.add(connection)
    # 100 sockets at 50 a second: over 2 s, after the 3 s a restarted process takes.
    hub.close_all(1012, "Service restart", reconnect_rate=50, after=3)
    delays = []
    for connection in sockets:
        code, reason = connection.closing
        delays.append(int(re.fullmatch(r"Service restart; reconnect in (\d+) ms",
                                       reason).group(1)))
    assert code == 1012
    assert all(3000 <= delay <= 5000 for delay in delays)
    assert len(set(delays)) > 50  # each drawn alone: not one wave


def test_a_socket_added_while_the_process_stops_is_closed_at_once():
    hub = Hub()
    before = Connection(ws=None, user_id=1, max_queued=Config.FEED_MAX_QUEUED)
    hub.add(before)
    hub.close_all(1012, "Service restart")
    late = Connection(ws=None, user_id=2, max_queued=Config.FEED_MAX_QUEUED)
    hub.add(late)
    assert before.closing == late.closing == (1012, "Service restart")


def blocked_writer(bounded):
    """A thread sending to a client that never reads, until its send fails."""
    failures = []

    def write():
        try:
            while True:
                bounded.send(b"x" * 1_000_000)
        except OSError as err:
            failures.append(err)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, failures


def test_a_socket_is_closed_only_once_its_writer_has_stopped_waiting():
    """Under gevent, closing a descriptor another greenlet polls can abort the worker."""
    ours, theirs = socket.socketpair()  # theirs never reads
    ours.setblocking(False)  # as gevent's sockets are underneath: the writer polls
    bounded = BoundedSocket(ours, timeout=30)
    writer, failures = blocked_writer(bounded)
    time.sleep(0.2)  # the writer now waits for room
    assert writer.is_alive() and failures == []
    bounded.close()
    assert not writer.is_alive()  # it stopped before close() returned
    assert ours.fileno() == -1
    assert isinstance(failures[0], OSError)
    theirs.close()


@pytest.mark.parametrize("frozen_client", [True, False])
def test_a_feed_handler_returns_once_its_writer_and_reader_have_stopped(frozen_client):
    ours, theirs = socket.socketpair()  # theirs never reads nor closes
    ours.setblocking(False)  # as gevent's sockets are underneath: sends are bounded
    bounded = BoundedSocket(ours, timeout=1)
    writer = blocked_writer(bounded)[0] if frozen_client else None  # it gives up in 1 s

    def read():  # as simple-websocket's reader: select, then read until the end
        with selectors.DefaultSelector() as selector:
            selector.register(ours, selectors.EVENT_READ)
            while selector.select(60) and ours.recv(4096):
                pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive() and (writer is None or writer.is_alive())
    # Its bound is generous (the writer gives up after 1 s): a loaded machine is slow.
    wind_down(SimpleNamespace(sock=bounded, thread=reader), writer, send_timeout=10)
    assert not reader.is_alive()  # woken by the end of the connection, not its 60 s
    assert writer is None or not writer.is_alive()
    assert ours.fileno() != -1  # still open: the server closes it, now that no one waits
    ours.close()
    theirs.close()
