"""Favorites: who keeps which listeners, and the events a change sends."""
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import aliased

from ..clock import clock, isoformat
from ..errors import bad_request, not_found, unauthorized
from ..events import Event
from ..models import Favorite, User, UserStatus
from ..sql import in_ids, built_once, fetch_rows, online_by_id, upsert
from .users import Caller



@built_once
def accounts():
    """The accounts of :ids, locked FOR KEY SHARE (PostgreSQL) until the commit: none can
    be deleted between this read and the writes that refer to it (a foreign key error
    would fail every change of a batch); updates of them do not wait."""
    return sa.select(User.id, User.username, User.role, User.is_active).where(
        in_ids(User.id, "ids")).order_by(User.id).with_for_update(read=True, key_share=True)


ADDED, REMOVED = "added", "removed"


def checked(kind, users, caller_id, listener_id):
    """The rules of a change, on the accounts read for it: (caller, listener) or the
    error refusing it. 401 if the caller's account is gone; adding needs an active
    listener other than the caller (400, 404); removing, any user that exists (404)."""
    caller = users.get(caller_id)
    if caller is None or not caller.is_active:
        raise unauthorized()
    listener = users.get(listener_id)
    if kind == ADDED:
        if listener_id == caller_id:
            raise bad_request("Cannot favorite yourself")
        if listener is None or listener.role != "listener" or not listener.is_active:
            raise not_found("Listener not found")
    elif listener is None:
        raise not_found("Listener not found")
    return caller, listener


@built_once
def bump_versions():
    """Move the favorites version of the users :ids: their cached list counts are stale
    everywhere."""
    return (sa.update(User).where(in_ids(User.id, "ids"))
            .values(favorites_version=User.favorites_version + 1))


def favorite_event(kind, user, listener_id, now=None):
    """The event a favorite change sends (stored for replay to the listener)."""
    return Event(
        type=f"favorite_{kind}",
        data={"user_id": user.id, "username": user.username,
              "action": f"{kind}_you_to_favorites" if kind == ADDED
              else f"{kind}_you_from_favorites"},
        subject_id=listener_id, timestamp=now or clock.now(),
    )


@built_once
def insert_favorite():
    """Add :caller's favorite :listener at :now unless it exists; RETURNING the pair added
    (one row per pair given: a batch sends many)."""
    return (
        upsert(Favorite)
        .values(user_id=sa.bindparam("caller"), listener_id=sa.bindparam("listener"),
                created_at=sa.bindparam("now", type_=Favorite.created_at.type))
        .on_conflict_do_nothing(index_elements=["user_id", "listener_id"])
        .returning(Favorite.user_id, Favorite.listener_id)
    )


@built_once
def _delete_favorite():
    return sa.delete(Favorite).where(Favorite.user_id == sa.bindparam("caller"),
                                     Favorite.listener_id == sa.bindparam("listener"))


def write_one(connection, kind, caller_id, listener_id, now):
    """Add or remove one favorite; whether it changed anything."""
    if kind == ADDED:
        return connection.execute(insert_favorite(), {
            "caller": caller_id, "listener": listener_id, "now": now}).scalar() is not None
    return connection.execute(_delete_favorite(), {
        "caller": caller_id, "listener": listener_id}).rowcount > 0


@built_once
def _check_statement():
    """The active listener :listener and whether :caller has favorited them."""
    favorited = sa.select(Favorite.id).where(
        Favorite.user_id == sa.bindparam("caller"), Favorite.listener_id == User.id).exists()
    return sa.select(User.id, User.username, favorited).where(
        User.id == sa.bindparam("listener"), User.role == "listener",
        User.is_active == sa.true())


def is_favorited(caller_id, listener_id):
    """Return (listener, whether the caller has favorited them); 404 unless the listener
    is active (customers and deactivated accounts are not named to other users)."""
    rows = fetch_rows(_check_statement(), {"caller": caller_id, "listener": listener_id})
    if not rows:
        raise not_found("Listener not found")
    user_id, username, found = rows[0]
    return Caller(user_id, username, "listener"), bool(found)


@built_once
def _listener_ids_statement():
    return sa.select(Favorite.listener_id).where(Favorite.user_id == sa.bindparam("caller"))


def listener_ids(caller_id):
    """The ids of every listener the caller has favorited (what their lists depend on)."""
    return [row[0] for row in fetch_rows(_listener_ids_statement(), {"caller": caller_id})]


@dataclass
class FavoritesSlice:
    """One page of a user's favorites with the counts over the whole filtered list."""

    items: list
    total_count: int
    online_count: int
    available_count: int
    has_next: bool
    has_previous: bool


# The columns of a list item, read as plain rows (no ORM objects on this hot path).
ITEM_COLUMNS = (
    Favorite.id.label("favorite_id"), User.id.label("user_id"), User.username, User.sex,
    User.bio, User.interests, User.profile_image_url, User.preferred_language, User.rating,
    User.country, UserStatus.is_online, UserStatus.last_seen, UserStatus.is_busy,
    UserStatus.wait_time, Favorite.created_at.label("favorited_at"),
    # No status row: offline, never changed (version 0).
    sa.func.coalesce(UserStatus.version, 0).label("version"),
)
ONLINE = online_by_id(UserStatus.is_online)  # the listed favorites, joined by id
AVAILABLE = sa.and_(ONLINE, UserStatus.is_busy == sa.false())


def _filter(online_only, available_only):
    return "available" if available_only else "online" if online_only else "all"


def _filtered(which):
    """The favorites of the user bound to :caller, one row per favorite, filtered."""
    query = (
        sa.select(*ITEM_COLUMNS)
        .join(User, User.id == Favorite.listener_id)
        # A listener whose status row is missing is shown as offline.
        .outerjoin(UserStatus, UserStatus.user_id == Favorite.listener_id)
        .where(Favorite.user_id == sa.bindparam("caller"), User.is_active == sa.true())
    )
    if which == "available":
        query = query.where(AVAILABLE)
    elif which == "online":
        query = query.where(ONLINE)
    return query


@built_once
def _statement(kind, which, *shape):
    """The statements of a list, by shape: its window, its counts, or whether a favorite
    lies beyond a bound."""
    if kind == "window":
        return _window(which, *shape)
    query = _filtered(which)
    if kind == "counts":
        return query.with_only_columns(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((ONLINE, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((AVAILABLE, 1), else_=0)), 0),
        )
    bound = sa.bindparam("bound")
    compare = {"older": Favorite.id < bound, "newer": Favorite.id > bound,
               "at_or_newer": Favorite.id >= bound}[shape[0]]
    return sa.select(query.with_only_columns(Favorite.id).where(compare).exists())


def _window(which, paged, upper, lower, ascending):
    """The caller's account and one window of their favorites, in one statement.

    The caller's row (active users only) is joined to the window, so a caller whose
    account is gone gets no row at all, and one with no favorites here one empty row.
    Paging from max_id alone also says whether any favorite lies at or above max_id
    (has_previous), so that common case needs nothing more."""
    window = _filtered(which)
    if upper:
        window = window.where(Favorite.id < sa.bindparam("max_id"))
    if lower:
        window = window.where(Favorite.id > sa.bindparam("lower"))
    window = window.order_by(Favorite.id.asc() if ascending else Favorite.id.desc())
    window = window.limit(sa.bindparam("limit"))
    if paged:
        window = window.offset(sa.bindparam("offset"))
    page = window.subquery("page")
    caller = aliased(User, name="caller")
    columns = [caller.favorites_version, *page.c]
    if upper and not lower and not ascending:
        newer = _filtered(which).with_only_columns(Favorite.id).where(
            Favorite.id >= sa.bindparam("max_id")).exists()
        columns.append(newer.label("newer"))
    return (
        sa.select(*columns).select_from(caller).outerjoin(page, sa.true())
        .where(caller.id == sa.bindparam("caller"), caller.is_active == sa.true())
        .order_by(page.c.favorite_id.asc() if ascending else page.c.favorite_id.desc())
    )


def _fetch(statement, **params):
    return fetch_rows(statement, params)


def _window_rows(caller_id, which, paged=False, upper=None, lower=None, ascending=False,
                 **params):
    """(favorites version, items, newer) of the caller's window; 401 if the account is
    gone. `newer` is None unless the window is bounded by max_id alone."""
    rows = _fetch(_statement("window", which, paged, upper is not None, lower is not None,
                            ascending),
                 caller=caller_id, max_id=upper, lower=lower, **params)
    if not rows:
        raise unauthorized()
    first = rows[0]
    end = 1 + len(ITEM_COLUMNS)
    items = [_item(*row[1:end]) for row in rows if row[1] is not None]
    newer = first[end] if len(first) > end else None
    return first[0], items, newer


# Counts of a list, by (user id, favorites version, filters): (valid until, counts),
# kept per app.
# Counting means reading every favorite's presence, so it is cached for a moment
# (FAVORITE_COUNTS_CACHE_SECONDS): a change to the user's own favorites moves their
# version and is counted at once, anywhere; presence changes show within the moment.
MAX_CACHED_COUNTS = 50_000


def _cached_counts(caller_id, version, which, exact=False):
    seconds = current_app.config["FAVORITE_COUNTS_CACHE_SECONDS"]
    if seconds <= 0 or exact:
        return _counts(caller_id, which)
    key = (caller_id, version, which)
    now = clock.now()
    cache = current_app.extensions.setdefault("saathii_favorite_counts", {})
    cached = cache.get(key)
    if cached is not None:
        valid_until, counts = cached
        if valid_until > now:
            return counts
        # Expired: this request counts afresh, and the requests that arrive meanwhile
        # reuse the old counts a moment longer rather than all count at once.
        cache[key] = (now + timedelta(seconds=seconds), counts)
    counts = _counts(caller_id, which)
    if len(cache) >= MAX_CACHED_COUNTS:
        cache.clear()
    cache[key] = (now + timedelta(seconds=seconds), counts)
    return counts


def _counts(caller_id, which):
    return tuple(int(n) for n in _fetch(_statement("counts", which), caller=caller_id)[0])


def _exists(caller_id, which, compare, bound):
    return bool(_fetch(_statement("exists", which, compare), caller=caller_id,
                      bound=bound)[0][0])


def _item(favorite_id, user_id, username, sex, bio, interests, profile_image_url,
          preferred_language, rating, country, is_online, last_seen, is_busy, wait_time,
          favorited_at, version):
    return {
        "favorite_id": favorite_id,
        "user_id": user_id,
        "username": username,
        "sex": sex,
        "bio": bio,
        "interests": interests or [],
        "profile_image_url": profile_image_url,
        "preferred_language": preferred_language,
        "rating": rating,
        "country": country,
        "is_online": bool(is_online),
        "last_seen": isoformat(last_seen),
        "is_busy": bool(is_busy),
        "wait_time": wait_time,
        "is_available": bool(is_online and not is_busy),
        "favorited_at": isoformat(favorited_at),
        "version": version,
    }


def favorites_page(caller_id, page, per_page, online_only=False, available_only=False,
                   exact_counts=False):
    """Page `page` of the caller's favorites, newest first (401 if the account is gone).
    exact_counts: counted now, not reused from the last moment's (an answer whose ETag
    is remembered must say what is true now: see revalidation)."""
    which = _filter(online_only, available_only)
    version, items, _ = _window_rows(caller_id, which, paged=True, limit=per_page,
                                     offset=(page - 1) * per_page)
    total, online, available = _cached_counts(caller_id, version, which, exact_counts)
    return FavoritesSlice(items, total, online, available,
                          has_next=page * per_page < total, has_previous=page > 1)


def favorites_by_cursor(caller_id, limit, max_id=None, since_id=None, min_id=None,
                        online_only=False, available_only=False, exact_counts=False):
    """Favorites by favorite id, as Mastodon pages them; always newest first (401 if the
    caller's account is gone). exact_counts: as for favorites_page."""
    which = _filter(online_only, available_only)
    lower = min_id if min_id is not None else since_id
    # min_id wants the favorites just above it: walk upwards, then present newest first.
    ascending = min_id is not None
    version, rows, newer = _window_rows(caller_id, which, upper=max_id, lower=lower,
                                        ascending=ascending, limit=limit + 1)
    total, online, available = _cached_counts(caller_id, version, which, exact_counts)
    more = len(rows) > limit
    rows = rows[:limit]
    if ascending:
        rows.reverse()
    if newer is None and max_id is not None and not rows:
        # Nothing in this window: anything newer lies at or above its upper bound.
        newer = _exists(caller_id, which, "at_or_newer", max_id)
    if not rows:
        return FavoritesSlice([], total, online, available, False, bool(newer))
    newest, oldest = rows[0]["favorite_id"], rows[-1]["favorite_id"]
    # An extra row past the limit answers "is there more?" for the side the window is
    # open on; a bounded side needs its own look (or came with the window: `newer`).
    older = more if not ascending and lower is None else _exists(
        caller_id, which, "older", oldest)
    if newer is None:
        newer = more if ascending and max_id is None else _exists(
            caller_id, which, "newer", newest)
    return FavoritesSlice(rows, total, online, available, has_next=older,
                          has_previous=bool(newer))
