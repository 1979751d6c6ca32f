"""Logs: a request id on every answer and line, text or JSON lines, and never a token."""
import http.client
import json
import logging
import re
import socket
import sys
import time

import pytest

from logformat import JsonFormatter, TextFormatter
from saathii.logs import QuietProbes, RedactTokens, redact

from .processes import read_logs_until, rest
from .sockets import FeedClient


def test_redact():
    assert redact("GET /ws/feed?token=abc.def.ghi&since=3 HTTP/1.1") == \
        "GET /ws/feed?token=[redacted]&since=3 HTTP/1.1"
    assert redact('"GET /ws/feed?token=x HTTP/1.1" 401') == \
        '"GET /ws/feed?token=[redacted] HTTP/1.1" 401'


def test_dev_server_access_lines_are_redacted(connect, customer, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    connect(customer).close()
    assert any(isinstance(f, RedactTokens) for f in logging.getLogger("werkzeug").filters)
    deadline = time.monotonic() + 5
    while True:  # the server logs a socket's request line once the socket has closed
        lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert lines and all(customer.token not in line for line in lines)
    assert any("token=[redacted]" in line for line in lines)


def test_redact_bearer_credentials_and_bare_tokens():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    assert redact(f"Authorization: Bearer {token}") == "Authorization: Bearer [redacted]"
    assert redact(f"GET /ws/{token}/x") == "GET /ws/[redacted]/x"
    assert redact("nothing to hide here") == "nothing to hide here"


@pytest.mark.parametrize("sent", ["abc", "req-1.2_3", "A" * 128])
def test_a_sane_request_id_is_kept(client, sent):
    response = client.get("/healthz", headers={"X-Request-ID": sent})
    assert (response.status_code, response.json) == (200, {"status": "ok"})
    assert response.headers["X-Request-ID"] == sent


@pytest.mark.parametrize("sent", [None, "", "A" * 129, "has space", "semi;colon", "é",
                                  "a\tb"])
def test_anything_else_gets_a_new_request_id(client, sent):
    headers = {} if sent is None else {"X-Request-ID": sent}
    first = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    second = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/favorites", 401), ("GET", "/no/such/thing", 404), ("POST", "/healthz", 405),
    ("POST", "/favorites/add", 401)])
def test_error_answers_carry_the_request_id_too(client, method, path, status):
    response = client.open(path, method=method, headers={"X-Request-ID": "trace-me"})
    assert response.status_code == status
    assert "detail" in response.json
    assert response.headers["X-Request-ID"] == "trace-me"


def record(message, *args, exc_info=None, **context):
    entry = logging.LogRecord("saathii.test", logging.WARNING, __file__, 1, message, args,
                              exc_info)
    entry.__dict__.update(context)
    return entry


def test_json_lines_carry_the_request_and_no_token():
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    try:
        raise ValueError(f"bad token={token}")
    except ValueError:
        failure = sys.exc_info()
    line = JsonFormatter().format(record(
        "socket %s failed", f"/ws/feed?token={token}", exc_info=failure, request_id="r-1",
        user_id=7, method="GET", route="/ws/feed"))
    entry = json.loads(line)
    assert "\n" not in line and token not in line
    assert entry["message"] == "socket /ws/feed?token=[redacted] failed"
    assert {key: entry[key] for key in ("level", "logger", "request_id", "user_id", "method",
                                        "route")} == {
        "level": "WARNING", "logger": "saathii.test", "request_id": "r-1", "user_id": 7,
        "method": "GET", "route": "/ws/feed"}
    assert entry["timestamp"].endswith("Z") and "token=[redacted]" in entry["exception"]


def test_text_lines_name_the_request_and_carry_no_token():
    line = TextFormatter().format(record("ping failed for token=%s", "secret",
                                         request_id="r-2"))
    assert line.endswith("[WARNING] saathii.test: ping failed for token=[redacted] "
                         "(request_id=r-2)")


@pytest.mark.parametrize("line, status, kept", [
    ("GET /healthz HTTP/1.1", "200", False), ("GET /readyz HTTP/1.1", "200", False),
    ("GET /readyz HTTP/1.1", "503", True), ("GET /favorites HTTP/1.1", "200", True),
    ("GET /healthzzz HTTP/1.1", "200", True)])
def test_the_dev_server_leaves_out_successful_probes(line, status, kept):
    entry = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"%s" %s %s',
                              (line, status, "-"), None)
    assert QuietProbes().filter(entry) is kept


CLOSED_REDIS = "redis://127.0.0.1:1/0"  # its relay is down: /readyz answers 503


def malformed_request_line(base, token):
    """A request line with a raw non-ASCII byte: gunicorn refuses it, and logs it."""
    host, port = base.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"GET /ws/feed?token={token}&n=".encode() + b"\xe9 HTTP/1.1\r\n"
                    b"Host: x\r\n\r\n")
        return raw.recv(100)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_gunicorn_logs_in_either_format_name_requests_and_never_a_token(
        web_process, customer, tmp_path, log_format):
    base = web_process(relay=None, REDIS_URL=CLOSED_REDIS, LOG_FORMAT=log_format,
                       LOG_LEVEL="INFO")
    feed = FeedClient(base, customer.token)
    assert feed.receive(timeout=10)["type"] == "connection_established"
    feed.close()
    assert malformed_request_line(base, customer.token).startswith(b"HTTP/1.1 400")
    connection = http.client.HTTPConnection(base, timeout=10)
    connection.request("GET", "/favorites", headers={**customer.headers,
                                                     "X-Request-ID": "client-id-1"})
    response = connection.getresponse()
    assert (response.status, response.getheader("X-Request-ID")) == (200, "client-id-1")
    response.read()
    assert rest(base, "GET", "/healthz", customer) == (200, {"status": "ok"})
    status, body = rest(base, "GET", "/readyz", customer)
    assert (status, body["checks"]["relay"]) == (503, "down")
    last = "GET /readyz 503" if log_format == "json" else '"GET /readyz HTTP/1.1" 503'
    logs = read_logs_until(tmp_path, last)
    connection.close()

    assert customer.token not in logs and customer.token.split(".")[2] not in logs
    (refused,) = [line for line in logs.splitlines() if "Invalid request from" in line]
    assert "token=[redacted]" in refused
    assert "/healthz" not in logs  # a successful probe is not news
    if log_format == "text":
        assert '"GET /favorites HTTP/1.1" 200' in logs and "request_id=client-id-1" in logs
        (not_ready,) = [line for line in logs.splitlines() if "not ready" in line]
        assert "[WARNING] saathii.api.health: not ready: database ok, relay down" in not_ready
        assert "(request_id=" in not_ready
        return
    entries = [json.loads(line) for line in logs.splitlines() if line.strip()]  # all JSON
    (access,) = [e for e in entries if e.get("route") == "/favorites"]
    assert access.pop("duration_ms") >= 0 and access.pop("timestamp").endswith("Z")
    assert access.pop("pid") > 0
    assert access == {"level": "INFO", "logger": "gunicorn.access",
                      "message": "GET /favorites 200", "request_id": "client-id-1",
                      "user_id": customer.id, "method": "GET", "route": "/favorites",
                      "status": 200}
    (not_ready,) = [e for e in entries if e["message"].startswith("not ready")]
    assert (not_ready["level"], not_ready["logger"], not_ready["route"]) == (
        "WARNING", "saathii.api.health", "/readyz")
    probe = [e for e in entries if e["logger"] == "gunicorn.access" and e["route"] == "/readyz"]
    assert [(e["level"], e["status"]) for e in probe] == [("WARNING", 503)]
    assert not_ready["request_id"] == probe[0]["request_id"]


def test_gunicorn_access_lines_in_the_service_layout(tmp_path, monkeypatch):
    """The text access line, whole: address, method, path without its query, protocol,
    status, bytes, whole milliseconds and the request id; a probe only when it fails."""
    from datetime import timedelta

    from gunicorn.config import Config

    from logformat import GunicornLogger

    monkeypatch.setenv("LOG_FORMAT", "text")
    path = tmp_path / "access.log"
    config = Config()
    config.set("accesslog", str(path))
    logger = GunicornLogger(config)

    class Sent:
        status, sent = "200 OK", 31

    environ = {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "POST",
               "PATH_INFO": "/both/status/heartbeat", "QUERY_STRING": "token=abc.def.ghi",
               "RAW_URI": "/both/status/heartbeat?token=abc.def.ghi",
               "SERVER_PROTOCOL": "HTTP/1.1", "saathii.request_id": "r-9"}
    logger.access(Sent(), None, environ, timedelta(milliseconds=12, microseconds=900))
    Sent.status, Sent.sent = "503 Service Unavailable", None
    logger.access(Sent(), None, {**environ, "PATH_INFO": "/readyz",
                                 "saathii.request_id": None}, timedelta(seconds=2))
    Sent.status = "200 OK"
    logger.access(Sent(), None, {**environ, "PATH_INFO": "/healthz"}, timedelta(0))
    for handler in logger.access_log.handlers:
        handler.flush()
    assert path.read_text().splitlines() == [
        '10.0.0.7 "POST /both/status/heartbeat HTTP/1.1" 200 31 12ms request_id=r-9',
        '10.0.0.7 "POST /readyz HTTP/1.1" 503 - 2000ms request_id=-']
