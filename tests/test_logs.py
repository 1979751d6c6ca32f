"""Access tokens never reach the logs."""
import logging
import time

from saathii.logs import RedactTokens, redact


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
