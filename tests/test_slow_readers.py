"""A client that does not take its answer in time has its connection closed
(RESPONSE_SEND_TIMEOUT_SECONDS, under gunicorn): a slow reader of the 1 MB Swagger bundle
holds no connection for long, and the log says so in one line."""
import socket
import time

from .processes import read_logs_until

BUNDLE = "/docs/swagger-ui/swagger-ui-bundle.js"


def get_slowly(base, path):
    """Ask for a path on a connection with a small receive window, take nothing for 4 s,
    then read what is left; (bytes received, seconds until the connection ended)."""
    host, port = base.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\n\r\n".encode())
    started = time.monotonic()
    time.sleep(4)
    received = b""
    sock.settimeout(10)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return received, time.monotonic() - started


def test_a_slow_reader_is_cut_off(web_process, tmp_path):
    base = web_process(RESPONSE_SEND_TIMEOUT_SECONDS="1", LOG_LEVEL="INFO")
    received, _ = get_slowly(base, BUNDLE)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    assert length > 1_000_000 and len(body) < length  # cut off before the end
    logs = read_logs_until(tmp_path, "did not take its answer in time")
    assert "Socket error processing request" not in logs and "Traceback" not in logs


def test_a_reader_within_the_time_gets_everything(web_process):
    base = web_process(RESPONSE_SEND_TIMEOUT_SECONDS="30")
    received, _ = get_slowly(base, BUNDLE)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == length
