"""The feed socket: /ws/feed (and /ws/presence), authenticated before the upgrade."""
import logging
import socket

from flask import Blueprint, Response, g, request

from ..auth import bearer_token, user_for_token
from ..errors import bad_request, unauthorized
from ..extensions import db, sock
from ..fields import is_id
from ..realtime import realtime
from ..realtime.session import FeedSession

bp = Blueprint("feed", __name__)


@bp.before_request
def authenticate():
    """Check the token (and since) before the socket is accepted."""
    user = user_for_token(request.args.get("token") or bearer_token())
    if user is None:
        raise unauthorized()
    since = request.args.get("since")
    if since is not None and not is_id(since, minimum=0):
        raise bad_request("since must be the id of the last event received")
    g.feed_user_id = user.id
    g.feed_since = int(since) if since is not None else None
    db.session.close()


def feed(ws):
    """Serve one feed socket until it closes."""
    g.feed_served = True
    FeedSession(ws, g.feed_user_id, g.feed_since, realtime()).run()


class SocketClosed(Response):
    """What Werkzeug's development server gets once a socket has closed: nothing to write.

    flask-sock 0.7.0 answers it with an HTTP 200 after the close frame, which browsers
    report as "Invalid frame header" (fixed upstream, not yet released). Raising
    ConnectionError makes Werkzeug treat the connection as dropped and write nothing; the
    access line it would have logged is logged here (its filter redacts the token).
    """

    def __call__(self, environ, start_response):
        logging.getLogger("werkzeug").info(
            '%s - - "%s %s %s" 101 -', environ.get("REMOTE_ADDR", "-"),
            environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI", environ.get("PATH_INFO")),
            environ.get("SERVER_PROTOCOL"))
        try:  # the server closes the TCP connection after the close handshake
            environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise ConnectionError


@bp.after_request
def end_socket_quietly(response):
    """After a socket on the development server, write nothing more (see SocketClosed)."""
    if g.get("feed_served") and "werkzeug.socket" in request.environ:
        return SocketClosed()
    return response


sock.route("/ws/feed", bp=bp, endpoint="feed")(feed)
sock.route("/ws/presence", bp=bp, endpoint="presence")(feed)
