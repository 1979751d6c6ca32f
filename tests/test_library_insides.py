"""The service reaches into two libraries' insides where they offer no public way, each
in one module named for it (gunicorn_errors.py, saathii/limiter_hook.py; the feed's
inbox, saathii/realtime/inbox.py, is guarded by tests/test_inbox.py). These tests fail
loudly, naming the library and its version, when an upgrade moves what they rely on."""
import inspect
import json
import socket
from importlib.metadata import version

import gunicorn.util
import gunicorn.workers.base
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

import gunicorn_errors
from saathii import limiter_hook


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


def test_flask_limiter_still_registers_its_before_request_pass_where_we_remove_it():
    where = f"Flask-Limiter {version('Flask-Limiter')}"
    app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://")
    check = getattr(limiter, "_check_request_limit", None)
    assert check is not None, (
        f"{where}: Limiter._check_request_limit is gone; saathii/limiter_hook.py must follow")
    assert check in app.before_request_funcs.get(None, []), (
        f"{where}: init_app no longer registers _check_request_limit as a before-request "
        "function; saathii/limiter_hook.py must follow it")
    assert limiter_hook.remove(app, limiter) is True
    assert check not in app.before_request_funcs.get(None, [])
    assert limiter_hook.remove(app, limiter) is False
