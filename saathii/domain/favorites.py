"""Favorites: who keeps which listeners, and the events a change sends."""
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from ..clock import clock, isoformat
from ..errors import bad_request, not_found
from ..events import Event, emit
from ..extensions import db
from ..models import Favorite, User, UserStatus
from . import upsert



def _find_user(user_id):
    user = db.session.get(User, user_id)
    if user is None:
        raise not_found("Listener not found")
    return user


def _changed(user):
    """Move the user's favorites version: their cached list counts are stale everywhere."""
    db.session.execute(sa.update(User).where(User.id == user.id)
                       .values(favorites_version=User.favorites_version + 1))


def _favorite_event(kind, user, listener_id):
    emit(Event(
        type=f"favorite_{kind}",
        data={"user_id": user.id, "username": user.username,
              "action": f"{kind}_you_to_favorites" if kind == "added"
              else f"{kind}_you_from_favorites"},
        subject_id=listener_id,
    ), store=True)


def add_favorite(user, listener_id):
    """Favorite a listener; return (listener, created). Idempotent."""
    if listener_id == user.id:
        raise bad_request("Cannot favorite yourself")
    listener = db.session.get(User, listener_id)
    if listener is None or not listener.is_listener or not listener.is_active:
        raise not_found("Listener not found")
    statement = (
        upsert(Favorite)
        .values(user_id=user.id, listener_id=listener_id, created_at=clock.now())
        .on_conflict_do_nothing(index_elements=["user_id", "listener_id"])
        .returning(Favorite.id)
    )
    created = db.session.execute(statement).scalar() is not None
    if created:
        _changed(user)
        _favorite_event("added", user, listener_id)
    return listener, created


def remove_favorite(user, listener_id):
    """Unfavorite a user; return (listener, removed). Idempotent."""
    listener = _find_user(listener_id)
    statement = sa.delete(Favorite).where(
        Favorite.user_id == user.id, Favorite.listener_id == listener_id
    )
    removed = db.session.execute(statement).rowcount > 0
    if removed:
        _changed(user)
        _favorite_event("removed", user, listener_id)
    return listener, removed


def is_favorited(user, listener_id):
    """Return (listener, whether the user has favorited them)."""
    listener = _find_user(listener_id)
    found = db.session.scalar(
        sa.select(Favorite.id).where(
            Favorite.user_id == user.id, Favorite.listener_id == listener_id
        )
    )
    return listener, found is not None


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
    Favorite.id, User.id, User.username, User.sex, User.bio, User.interests,
    User.profile_image_url, User.preferred_language, User.rating, User.country,
    UserStatus.is_online, UserStatus.last_seen, UserStatus.is_busy, UserStatus.wait_time,
    Favorite.created_at,
)
ONLINE = UserStatus.is_online == sa.true()
AVAILABLE = sa.and_(ONLINE, UserStatus.is_busy == sa.false())


def _filtered(user_id, online_only, available_only):
    """The favorites query, one row per favorite, with the list filters applied."""
    query = (
        sa.select(*ITEM_COLUMNS)
        .join(User, User.id == Favorite.listener_id)
        # A listener whose status row is missing is shown as offline.
        .outerjoin(UserStatus, UserStatus.user_id == Favorite.listener_id)
        .where(Favorite.user_id == user_id, User.is_active == sa.true())
    )
    if available_only:
        query = query.where(AVAILABLE)
    elif online_only:
        query = query.where(ONLINE)
    return query


# Counts of a list, by (user id, favorites version, filters): (valid until, counts).
# Counting means reading every favorite's presence, so it is cached for a moment
# (FAVORITE_COUNTS_CACHE_SECONDS): a change to the user's own favorites moves their
# version and is counted at once, anywhere; presence changes show within the moment.
_counts_cache = {}
MAX_CACHED_COUNTS = 50_000


def _cached_counts(user, query, *filters):
    seconds = current_app.config["FAVORITE_COUNTS_CACHE_SECONDS"]
    if seconds <= 0:
        return _counts(query)
    key = (user.id, user.favorites_version, *filters)
    now = clock.now()
    cached = _counts_cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    counts = _counts(query)
    if len(_counts_cache) >= MAX_CACHED_COUNTS:
        _counts_cache.clear()
    _counts_cache[key] = (now + timedelta(seconds=seconds), counts)
    return counts


def _counts(query):
    counts = query.with_only_columns(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((ONLINE, 1), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((AVAILABLE, 1), else_=0)), 0),
    )
    return tuple(int(n) for n in db.session.execute(counts).one())


def _rows(query):
    return [_item(*row) for row in db.session.execute(query)]


def _item(favorite_id, user_id, username, sex, bio, interests, profile_image_url,
          preferred_language, rating, country, is_online, last_seen, is_busy, wait_time,
          favorited_at):
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
    }


def favorites_page(user, page, per_page, online_only=False, available_only=False):
    """Page `page` of the user's favorites, newest first."""
    query = _filtered(user.id, online_only, available_only)
    total, online, available = _cached_counts(user, query, online_only, available_only)
    items = _rows(query.order_by(Favorite.id.desc()).offset((page - 1) * per_page).limit(per_page))
    return FavoritesSlice(items, total, online, available,
                          has_next=page * per_page < total, has_previous=page > 1)


def favorites_by_cursor(user, limit, max_id=None, since_id=None, min_id=None,
                        online_only=False, available_only=False):
    """Favorites by favorite id, as Mastodon pages them; always newest first."""
    query = _filtered(user.id, online_only, available_only)
    total, online, available = _cached_counts(user, query, online_only, available_only)
    window = query
    if max_id is not None:
        window = window.where(Favorite.id < max_id)
    lower = min_id if min_id is not None else since_id
    if lower is not None:
        window = window.where(Favorite.id > lower)
    # min_id wants the favorites just above it: walk upwards, then present newest first.
    ascending = min_id is not None
    order = Favorite.id.asc() if ascending else Favorite.id.desc()
    rows = _rows(window.order_by(order).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    if ascending:
        rows.reverse()
    if not rows:
        # Nothing in this window: anything newer lies at or above its upper bound.
        newer = max_id is not None and _exists(query.where(Favorite.id >= max_id))
        return FavoritesSlice([], total, online, available, False, newer)
    newest, oldest = rows[0]["favorite_id"], rows[-1]["favorite_id"]
    # An extra row past the limit answers "is there more?" for the side the window is
    # open on; a bounded side needs its own look.
    older = more if not ascending and lower is None else _exists(
        query.where(Favorite.id < oldest))
    newer = more if ascending and max_id is None else _exists(
        query.where(Favorite.id > newest))
    return FavoritesSlice(rows, total, online, available, has_next=older, has_previous=newer)


def _exists(query):
    return db.session.scalar(sa.select(query.with_only_columns(Favorite.id).exists()))
