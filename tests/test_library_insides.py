"""The service reaches into libraries' insides only where they offer no public way, each
in one module named for it (gunicorn_errors.py; the feed's inbox,
saathii/realtime/inbox.py, is guarded by tests/test_inbox.py). These tests fail
loudly, naming the library and its version, when an upgrade moves what they rely on."""
import inspect
import json
import socket
from importlib.metadata import version

import gunicorn.util
import gunicorn.workers.base

import gunicorn_errors


def test_gunicorn_still_answers_its_own_errors_through_util_write_error():
    where = f"gunicorn {version('gunicorn')}"
    handler = inspect.getsource(gunicorn.workers.base.Worker.handle_error)
    assert "util.write_error(client, status_int, reason, mesg)" in handler, (
        f"{where}: Worker.handle_error no longer calls util.write_error(client, "
        "status_int, reason, mesg); gunicorn_errors.py must follow it")
    assert callable(getattr(gunicorn.util, "write_error", None)), (
        f"{where}: gunicorn.util.write_error is gone; gunicorn_errors.py must follow it")
    theirs = list(inspect.signature(gunicorn.util.write_error).parameters)
    ours = list(inspect.signature(gunicorn_errors.write_json_error).parameters)
    assert theirs == ours, f"{where}: util.write_error takes {theirs} now, not {ours}"


def test_the_json_writer_answers_as_the_service_does_and_echoes_no_token():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        gunicorn_errors.write_json_error(
            ours, 400, "Bad Request", "Invalid request line 'GET /ws/feed?token=abc.def.ghi'")
        ours.close()
        sent = b"".join(iter(lambda: theirs.recv(4096), b""))
    head, body = sent.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 400 Bad Request", b"Connection: close", b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode()]
    assert json.loads(body) == {
        "detail": "Bad Request: Invalid request line 'GET /ws/feed?token=[redacted]'"}
