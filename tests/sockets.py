"""Fixtures and helpers for feed sockets: the app served over real HTTP in a thread, and
a feed client that speaks JSON."""
import json
import socket as raw_socket
import threading

import pytest
import simple_websocket
from werkzeug.serving import make_server


def serve(app):
    """Serve an app over real HTTP in a background thread: yields its base URL, then
    stops it (a generator for fixtures)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def live_server(app):
    """The app served over real HTTP in a background thread; yields its base URL."""
    yield from serve(app)


def raw_feed(live_server, token):
    """A feed socket's upgrade sent on a plain TCP socket (returned, nothing read): a peer
    that then reads or answers only what the test makes it."""
    host, port = live_server.split(":")
    raw = raw_socket.create_connection((host, int(port)), timeout=5)
    raw.sendall((f"GET /ws/feed?token={token} HTTP/1.1\r\nHost: {live_server}\r\n"
                 "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    return raw


class WebSocketClient(simple_websocket.Client):
    """simple-websocket's client, keeping frames that arrive with the handshake response
    (it would otherwise leave the server's greeting unread until more data came)."""

    def handshake(self):
        super().handshake()
        self._handle_events()


class FeedClient:
    """A feed socket as a test sees it: JSON in, JSON out."""

    def __init__(self, base, token, since=None, path="/ws/feed"):
        query = f"?token={token}" + (f"&since={since}" if since is not None else "")
        self.ws = WebSocketClient.connect(f"ws://{base}{path}{query}")

    def send(self, message):
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def receive(self, timeout=5):
        raw = self.ws.receive(timeout=timeout)
        assert raw is not None, "no message arrived in time"
        return json.loads(raw)

    def expect_nothing_queued(self):
        """Prove no message is waiting: the next one answers this no-op request.

        Events are queued before the REST call that caused them returns, and a socket's
        messages leave in order, so anything queued would arrive before the answer.
        """
        self.send({"type": "unsubscribe", "user_ids": []})
        message = self.receive()
        assert message["type"] == "subscription_confirmed", message
        return message

    def drain(self):
        """Every message queued before a no-op request's answer (see expect_nothing_queued)."""
        self.send({"type": "unsubscribe", "user_ids": []})
        drained = []
        while (message := self.receive())["type"] != "subscription_confirmed":
            drained.append(message)
        return drained

    def close(self):
        try:
            self.ws.close()
        except simple_websocket.ConnectionClosed:
            pass


@pytest.fixture
def connect(live_server):
    """Open feed sockets that are closed after the test; the first message is checked."""
    opened = []

    def open_socket(account, since=None, path="/ws/feed"):
        client = FeedClient(live_server, account.token, since, path)
        opened.append(client)
        client.hello = client.receive()
        assert client.hello["type"] == "connection_established"
        assert client.hello["data"].keys() == {"user_id", "last_event_id"}
        assert client.hello["data"]["user_id"] == account.id
        return client

    yield open_socket
    for client in opened:
        client.close()
