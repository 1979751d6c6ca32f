"""The feed socket: /ws/feed (and /ws/presence), authenticated before the upgrade."""
from flask import Blueprint, current_app, g, request

from .. import metrics
from ..auth import bearer_token, user_for_token
from ..errors import bad_request, unauthorized
from ..extensions import db, sock
from ..fields import is_id
from ..realtime import devserver, realtime
from ..realtime.session import FeedSession

bp = Blueprint("feed", __name__)
bp.after_request(devserver.end_socket_quietly)


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
    g.socket_served = ws  # the development server's ending needs it (devserver)
    with metrics.feed_socket():
        FeedSession(ws, g.feed_user_id, g.feed_since, realtime(), current_app.config).run()


sock.route("/ws/feed", bp=bp, endpoint="feed")(feed)
sock.route("/ws/presence", bp=bp, endpoint="presence")(feed)
