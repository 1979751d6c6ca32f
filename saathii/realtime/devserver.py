"""Werkzeug's development server (`flask run`, the tests' live server) after a socket."""
import logging
import socket

from flask import Response, g, request

# How long a closing socket's reader thread may take to send its last frame.
CLOSE_GRACE_SECONDS = 5


class SocketClosed(Response):
    """What Werkzeug's development server gets once a socket has closed: nothing to write.

    flask-sock 0.7.0 answers it with an HTTP 200 after the close frame, which browsers
    report as "Invalid frame header" (fixed upstream, not yet released). Raising
    ConnectionError makes Werkzeug treat the connection as dropped and write nothing; the
    access line it would have logged is logged here (its filter redacts the token).
    """

    def __init__(self, ws):
        super().__init__()
        self.ws = ws

    def __call__(self, environ, start_response):
        logging.getLogger("werkzeug").info(
            '%s - - "%s %s %s" 101 -', environ.get("REMOTE_ADDR", "-"),
            environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI", environ.get("PATH_INFO")),
            environ.get("SERVER_PROTOCOL"))
        # simple-websocket's reader thread wakes the handler before it sends its answer
        # to a client's close frame: let it finish (it then closes the socket itself).
        self.ws.thread.join(CLOSE_GRACE_SECONDS)
        try:  # the server closes the TCP connection after the close handshake
            environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise ConnectionError


def end_socket_quietly(response):
    """after_request: once a socket has been served on the development server, write
    nothing more (see SocketClosed)."""
    ws = g.get("socket_served")
    if ws is not None and "werkzeug.socket" in request.environ:
        return SocketClosed(ws)
    return response
