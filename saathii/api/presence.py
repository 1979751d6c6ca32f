"""Presence endpoints: the caller's own status and heartbeat, and other users' presence.

The Presence & Status API's paths live under /both/status; its mobile client's paths
under /users/me. Both are served.
"""
from flask import Blueprint, g

from ..auth import authenticate
from ..domain import beats, presence, status_updates
from ..errors import unauthorized
from ..rate_limits import heartbeat_limit, presence_lookups_limit
from ..schemas import (
    message_schema, status_schema,
    status_update_schema, user_ids_query_schema,
)
from . import json_body, path_id, query_args

bp = Blueprint("presence", __name__)
HEARTBEAT_RECEIVED = message_schema.dump({"message": "Heartbeat received"})


@bp.get("/both/status/me")
@bp.get("/users/me/status")
@authenticate(account_in_query=True)
def my_status():
    """The caller's own status."""
    return status_schema.dump(status_updates.own_status(g.user_id))


@bp.post("/both/status/heartbeat")
@bp.post("/users/me/heartbeat")
@authenticate(account_in_query=True)
@heartbeat_limit
def heartbeat():
    """Mark the caller online and seen now."""
    if not beats.beat(g.user_id):
        raise unauthorized()
    return HEARTBEAT_RECEIVED


@bp.put("/both/status/me")
@bp.put("/users/me/status")
@authenticate(account_in_query=True)  # the body is validated before the account check
def update_my_status():
    """Change the caller's online, busy or wait_time state."""
    changes = json_body(status_update_schema)
    presence.check_update(changes)
    return status_schema.dump(status_updates.commit(g.user_id, changes))


@bp.get("/users/<user_id>/presence")
@authenticate(account_in_query=True)
@presence_lookups_limit
def user_presence(user_id):
    """One user's presence."""
    return presence.presence_for(g.user_id, path_id(user_id, "user_id"))


@bp.get("/users/presence")
@authenticate(account_in_query=True)
@presence_lookups_limit
def batch_presence():
    """Presence of up to 100 users, ordered by user id; unknown ids are left out."""
    user_ids = presence.parse_user_ids(query_args(user_ids_query_schema)["user_ids"])
    return presence.presence_batch(g.user_id, user_ids)
