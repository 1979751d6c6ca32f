"""Slow and broken request bodies, against the Procfile's web command: a body is read
whole before anything takes a database connection, within REQUEST_BODY_TIMEOUT_SECONDS
(then 408, connection closed); a malformed one is a 400; a full pool is a 503."""
import http.client
import json
import socket
import threading

import pytest
import sqlalchemy as sa

from saathii.extensions import db

from .processes import rest

BODY_TIMEOUT = 2


def raw_request(base, head, body=b""):
    """Send a request's head (and some body) on a raw connection; return the socket."""
    host, port = base.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def read_response(sock):
    """(status, JSON body, whether the server then closed the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed without a response: {data!r}"
        data += chunk
    head, _, rest_ = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(rest_) < length:
        rest_ += sock.recv(4096)
    body, after = rest_[:length], rest_[length:]
    sock.settimeout(10)
    try:
        while chunk := sock.recv(4096):
            after += chunk
        closed = True
    except socket.timeout:
        closed = False
    return int(head.split(b" ")[1]), json.loads(body), closed


def put_status_head(base, token, length):
    return (f"PUT /both/status/me HTTP/1.1\r\nHost: {base}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n")


@pytest.fixture
def server(web_process):
    # Two pooled connections and no overflow: a slow body that held one would be seen.
    return web_process(relay=None, REQUEST_BODY_TIMEOUT_SECONDS=BODY_TIMEOUT, DB_POOL_SIZE=2,
                       DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT_SECONDS=2)


def test_slow_bodies_hold_no_connection_and_get_408(server, customer, listener, make_user):
    others = [make_user(f"other_{n}", "customer") for n in range(4)]
    slow = [raw_request(server, put_status_head(server, customer.token, 100), b"{")
            for _ in range(30)]
    stop = threading.Event()

    def dribble():  # a byte a second, never the whole body in time
        while not stop.wait(1):
            for sock in slow:
                try:
                    sock.sendall(b" ")
                except OSError:
                    pass

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        for other in others * 3:  # other users are served all along
            status, body = rest(server, "PUT", "/both/status/me", other, {"is_online": True})
            assert (status, body["is_online"]) == (200, True)
            status, body = rest(server, "GET", "/favorites", other)
            assert (status, body["total_count"]) == (200, 0)
        answers = [read_response(sock) for sock in slow]
    finally:
        stop.set()
        dribbler.join(5)
        for sock in slow:
            sock.close()
    assert answers == [(408, {"detail": "Request body not received in time"}, True)] * 30
    status, body = rest(server, "GET", "/both/status/me", customer)
    assert (status, body["is_online"]) == (200, False)  # nothing of theirs was applied


def test_a_body_that_never_comes_is_a_408(server, customer):
    sock = raw_request(server, put_status_head(server, customer.token, 100))
    try:
        assert read_response(sock) == (408, {"detail": "Request body not received in time"},
                                       True)
    finally:
        sock.close()


def test_a_body_cut_short_is_a_400_and_not_applied(server, customer):
    sock = raw_request(server, put_status_head(server, customer.token, 100),
                       b'{"is_online": true}')
    sock.shutdown(socket.SHUT_WR)  # the client ends its side: 19 of 100 bytes
    try:
        assert read_response(sock) == (400, {"detail": "Malformed request body"}, True)
    finally:
        sock.close()
    status, body = rest(server, "GET", "/both/status/me", customer)
    assert (status, body["is_online"]) == (200, False)


def test_a_connection_stays_usable_after_a_413(server, customer):
    """A whole body over the limit is refused and the connection kept (gunicorn reads
    and drops the rest of the body, within its keep-alive time): the client's next
    request on it is served. gunicorn announces keep-alive whatever the app says, so
    closing here would lose that next request."""
    connection = http.client.HTTPConnection(server, timeout=10)
    headers = {**customer.headers, "Content-Type": "application/json"}
    try:
        connection.request("PUT", "/both/status/me", body=b" " * 20_000, headers=headers)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (
            413, {"detail": "Request body too large (the limit is 16 KiB)"})
        connection.request("PUT", "/both/status/me", body=b'{"is_online": true}',
                           headers=headers)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["is_online"]) == (200, True)
    finally:
        connection.close()


@pytest.mark.parametrize("chunks", ["zz\r\n{}\r\n0\r\n\r\n", "2\r\n{}XX0\r\n\r\n"])
def test_a_malformed_chunked_body_is_a_400(server, customer, chunks):
    head = (f"PUT /both/status/me HTTP/1.1\r\nHost: {server}\r\n"
            f"Authorization: Bearer {customer.token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    sock = raw_request(server, head, chunks.encode())
    try:
        status, body, closed = read_response(sock)
    finally:
        sock.close()
    assert (status, body, closed) == (400, {"detail": "Malformed request body"}, True)


def test_a_full_pool_is_a_503_with_retry_after(app, client, customer):
    with app.app_context():  # the app's engine, swapped for one whose pool is taken
        engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"], pool_size=1,
                                  max_overflow=0, pool_timeout=0.5)
        db.engines  # noqa: B018 - make sure Flask-SQLAlchemy made its engines first
        held = engine.connect()
        original = db.engines[None]
        db._app_engines[app][None] = engine
        try:
            response = client.get("/favorites", headers=customer.headers)
        finally:
            db._app_engines[app][None] = original
            held.close()
            engine.dispose()
    assert response.status_code == 503
    assert response.json == {"detail": "Service temporarily unavailable, try again shortly"}
    assert response.headers["Retry-After"] == "5"


@pytest.mark.parametrize("request_head, status, detail", [
    ("GET /ws/feed?token=secret.jwt.value&n=\xe9 HTTP/1.1\r\n\r\n", 400, "Bad Request: "),
    ("GET /" + "a" * 5000 + " HTTP/1.1\r\n\r\n", 414, "URI Too Long: "),
    ("GET / HTTP/1.1\r\n" + "".join(f"X-{n}: 1\r\n" for n in range(200)) + "\r\n", 431,
     "Request Header Fields Too Large: "),
], ids=["bad-request-line", "long-uri", "many-headers"])
def test_what_gunicorn_cannot_parse_is_answered_in_json(server, request_head, status, detail):
    sock = raw_request(server, "")
    sock.sendall(request_head.encode("latin-1"))
    try:
        answer = read_response(sock)
    finally:
        sock.close()
    assert answer[0] == status and answer[2] is True
    assert answer[1]["detail"].startswith(detail)
    assert "secret.jwt.value" not in answer[1]["detail"]
