"""Favorites endpoints: add, remove, check and list a user's favorite listeners."""
from flask import Blueprint, g, request

from ..auth import authenticate
from ..domain import favorite_changes, favorites
from ..rate_limits import favorite_changes_limit, presence_lookups_limit
from ..pagination import cursor_links, page_links
from ..schemas import (
    CURSOR_PARAMS, favorite_action_schema, favorite_request_schema, favorites_page_schema,
    favorites_query_schema,
)
from .contract import arguments, body, other_responses, path_ids, response, revalidated

bp = Blueprint("favorites", __name__, url_prefix="/favorites")

DEFAULT_PER_PAGE = 20
LINK = {"Link": "RFC 8288 links: next, prev (and first, last in page mode)"}


def _action(listener, is_favorited, message):
    return {"success": True, "message": message, "listener_id": listener.id,
            "is_favorited": is_favorited}


@bp.post("/add")
@authenticate(account_in_query=True)
@favorite_changes_limit
@body(favorite_request_schema)
@response(favorite_action_schema)
@other_responses(404, 429)
def add(data):
    """Add a listener to my favorites."""
    listener, created = favorite_changes.commit(favorites.ADDED, g.user_id,
                                                data["listener_id"])
    message = (f"Successfully added {listener.username} to favorites" if created
               else f"Already favorited {listener.username}")
    return _action(listener, True, message)


@bp.delete("/remove")
@authenticate(account_in_query=True)
@favorite_changes_limit
@body(favorite_request_schema)
@response(favorite_action_schema)
@other_responses(404, 429)
def remove(data):
    """Remove a listener from my favorites."""
    listener, removed = favorite_changes.commit(favorites.REMOVED, g.user_id,
                                                data["listener_id"])
    message = (f"Successfully removed {listener.username} from favorites" if removed
               else f"{listener.username} was not in favorites")
    return _action(listener, False, message)


@bp.get("/check/<listener_id>")
@authenticate
@presence_lookups_limit  # it names another user, as presence look-ups do: one budget
@path_ids(listener_id="The listener's user id")
@response(favorite_action_schema)
@other_responses(404, 429)
def check(listener_id):
    """Is this listener in my favorites?"""
    listener, found = favorites.is_favorited(g.user_id, listener_id)
    where = "in" if found else "not in"
    return _action(listener, found, f"{listener.username} is {where} favorites")


def _list_depends_on(_data):
    """A list shows the caller's favorites and each favorite's presence."""
    return favorites.listener_ids(g.user_id), g.user_id


@bp.get("")
@authenticate(account_in_query=True)
@revalidated(_list_depends_on)
@arguments(favorites_query_schema)
@response(favorites_page_schema, headers=LINK)
def index(args):
    """My favorites, newest first, by page (page, per_page) or by cursor (limit, max_id,
    since_id, min_id).

    With any cursor parameter (limit, max_id, since_id, min_id) the list is paged by
    cursor and page/per_page are ignored; min_id wins over since_id."""
    filters = {name: args[name] for name in ("online_only", "available_only")}
    # A conditional request's answer is remembered with its ETag: its counts are exact.
    filters["exact_counts"] = bool(request.if_none_match)
    base = {name: "true" for name in ("online_only", "available_only") if args[name]}
    if "page" in args or "per_page" in args:
        page, per_page = args.get("page", 1), args.get("per_page", DEFAULT_PER_PAGE)
        result = favorites.favorites_page(g.user_id, page, per_page, **filters)
        link = page_links(base, page, per_page, result.total_count, result.has_next)
    else:
        # No page number: the head of the list, linked by cursor so a client that
        # follows Link headers never skips or repeats a favorite.
        page, per_page = None, args.get("limit", DEFAULT_PER_PAGE)
        cursor = {name: args[name] for name in CURSOR_PARAMS[1:] if name in args}
        result = favorites.favorites_by_cursor(g.user_id, per_page, **cursor, **filters)
        link = cursor_links(base, per_page, result.items, result.has_next, args)
        if not cursor:
            page = 1
    body = {
        "favorites": result.items, "total_count": result.total_count,
        "online_count": result.online_count, "available_count": result.available_count,
        "page": page, "per_page": per_page, "has_next": result.has_next,
        "has_previous": result.has_previous,
    }
    return body, {"Link": link}
