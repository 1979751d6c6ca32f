"""Presence endpoints: the caller's own status and heartbeat, and other users' presence.

The Presence & Status API's paths live under /both/status; its mobile client's paths
under /users/me. Both are served.
"""
from flask import Blueprint, g, request

from ..auth import authenticate
from ..domain import beats, presence, status_updates
from ..errors import unauthorized
from ..rate_limits import heartbeat_limit, presence_lookups_limit
from ..schemas import (
    message_schema, presence_schema, presences_schema, status_schema, status_update_schema,
    user_ids_query_schema,
)
from .contract import arguments, body, other_responses, path_ids, response, revalidated

bp = Blueprint("presence", __name__)
HEARTBEAT_RECEIVED = {"message": "Heartbeat received"}


@bp.get("/both/status/me")
@bp.get("/users/me/status")
@authenticate(account_in_query=True)
@revalidated(lambda _data: ((g.user_id,), None))
@response(status_schema)
def my_status():
    """My status."""
    return status_updates.own_status(g.user_id)


@bp.post("/both/status/heartbeat")
@bp.post("/users/me/heartbeat")
@authenticate(account_in_query=True)
@heartbeat_limit
@response(message_schema)
@other_responses(429)
def heartbeat():
    """Heartbeat: I am online."""
    if not beats.beat(g.user_id):
        raise unauthorized()
    return HEARTBEAT_RECEIVED


@bp.put("/both/status/me")
@bp.put("/users/me/status")
@authenticate(account_in_query=True)  # the body is validated before the account check
@body(status_update_schema)
@response(status_schema)
@other_responses(409)
def update_my_status(changes):
    """Update my status."""
    presence.check_update(changes)
    return status_updates.commit(g.user_id, changes)


@bp.get("/users/<user_id>/presence")
@authenticate(account_in_query=True)
@presence_lookups_limit
@revalidated(lambda data: ((data["user_id"],), None))
@path_ids(user_id="The user's id")
@response(presence_schema)
@other_responses(404, 429)
def user_presence(user_id):
    """One user's presence."""
    return presence.presence_for(g.user_id, user_id)


@bp.get("/users/presence")
@authenticate(account_in_query=True)
@presence_lookups_limit
@revalidated(lambda _data: (presence.parse_user_ids(request.args.get("user_ids")), None))
@arguments(user_ids_query_schema)
@response(presences_schema)
@other_responses(429)
def batch_presence(args):
    """Presence of up to 100 users, ordered by user id.

    Unknown ids are left out."""
    return presence.presence_batch(g.user_id, presence.parse_user_ids(args["user_ids"]))
