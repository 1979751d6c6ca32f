"""gunicorn's own error answers as the service's JSON errors: the one place that replaces
an inside of gunicorn.

gunicorn answers a request it cannot parse (400, 414, 431...) itself, before the app
sees it, with `gunicorn.util.write_error`: an HTML page that echoes the request line (a
feed token included). It has no setting or hook for that answer, so install() replaces
the function, which its workers call through the module (`util.write_error(...)` in
gunicorn.workers.base). Imported by gunicorn.conf.py in the master, so it imports none
of the app. tests/test_library_insides.py fails, naming gunicorn's version, if an
upgrade renames the function or stops calling it that way.
"""
import json

from gunicorn import util

from logformat import redact


def write_json_error(sock, status_int, reason, mesg):
    """Write gunicorn's error answer as JSON {"detail": ...}; a token in the request line
    is not echoed."""
    detail = f"{reason}: {redact(mesg)}" if mesg else reason
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install():
    """Have gunicorn's workers answer their own errors with write_json_error."""
    util.write_error = write_json_error
