"""The feed socket: /ws/feed (and /ws/presence), authenticated before the upgrade."""
import base64
import binascii

from flask import Blueprint, current_app, g, request

from .. import metrics, rate_limits, slow_readers
from ..admission import greeting_slot
from ..auth import bearer_token, verified_token
from ..deadline import deadline
from ..errors import (APIError, bad_request, error_response, restarting, sockets_full,
                      unauthorized)
from ..extensions import db, sock
from ..fields import is_id
from ..realtime import devserver, realtime
from ..realtime.hub import HubFull
from ..realtime.session import FeedSession, register

bp = Blueprint("feed", __name__)
bp.after_request(devserver.end_socket_quietly)


def check_handshake():
    """Refuse an upgrade that simple-websocket could not complete (400, not a 500)."""
    try:
        key = base64.b64decode(request.headers.get("Sec-WebSocket-Key", ""), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        raise bad_request("Invalid WebSocket handshake: Sec-WebSocket-Key is missing or "
                          "malformed")
    if request.headers.get("Sec-WebSocket-Version") != "13":
        raise APIError(400, "Invalid WebSocket handshake: Sec-WebSocket-Version must be 13",
                       headers={"Sec-WebSocket-Version": "13"})
    # No permessage-deflate: the message size limit then holds on what the server keeps
    # (a small compressed frame can inflate to megabytes), and each socket saves a zlib
    # context; the feed's messages are small (README: "Bounded sockets").
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


@bp.before_request
def authenticate():
    """Check the handshake, the token, since and the user's rate of socket opens, then
    register the socket and read its greeting (the account is checked in the same
    query) before the socket is accepted."""
    check_handshake()
    verified = verified_token(request.args.get("token") or bearer_token())
    if verified is None:
        raise unauthorized()
    since = request.args.get("since")
    if since is not None and not is_id(since, minimum=0):
        raise bad_request("since must be the id of the last event received")
    # A stopping or full process refuses before the limit counts (a deploy's or a full
    # server's refusals cost no budget); register checks again as the socket enters the
    # hub, for a stop that begins or sockets that fill it meanwhile.
    if realtime().closing:
        raise restarting()
    realtime().hub.check_room()
    # Before the greeting's query: a client opening socket after socket is refused
    # cheaply (a phone reconnects far less often than the limit allows). A socket's
    # request has no deadline of its own: the refusal's account check gets one.
    with deadline(current_app.config["REQUEST_TIMEOUT_SECONDS"], "feed limit"):
        rate_limits.require_within_limit("RATELIMIT_FEED_CONNECTS", "feed-connects", verified[0])
    with greeting_slot():
        try:
            g.feed_registered = register(realtime(), current_app.config, *verified)
        finally:
            db.session.close()
    if g.feed_registered is None:
        raise unauthorized()
    g.feed_since = int(since) if since is not None else None


@bp.errorhandler(HubFull)
def refuse_when_full(err):
    """This process holds all the sockets it takes: 503 before the upgrade, and the
    client connects again (through the router, to another process or later)."""
    refusal = sockets_full()
    return error_response(refusal.status, refusal.detail, headers=refusal.headers)


@bp.teardown_request
def unregister(exc=None):
    """A socket registered but never served (the upgrade failed) leaves the hub too."""
    registered = g.pop("feed_registered", None)
    if registered is not None:
        realtime().hub.remove(registered.connection)


def feed(ws):
    """Serve one feed socket until it closes."""
    g.socket_served = ws  # the development server's ending needs it (devserver)
    request.environ[slow_readers.SOCKET_SERVED] = True  # it bounds its own sends
    with metrics.feed_socket():
        FeedSession(ws, g.feed_registered, g.feed_since, realtime(), current_app.config).run()


sock.route("/ws/feed", bp=bp, endpoint="feed")(feed)
sock.route("/ws/presence", bp=bp, endpoint="presence")(feed)
