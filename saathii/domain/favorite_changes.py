"""Favorite adds and removes of many users written together: one transaction per batch.

A change joins the batch that forms while the previous one is being written (see
batches.Batcher): the accounts are read in one statement (locked against deletion until
the commit), each change checked by the same rules as alone (favorites.checked), the
adds written in one statement and the removes in another, the lists' versions and the
stored events in one statement each, one commit, then the events published. A change
refused by the rules (400, 404) refuses no other of its batch.
"""
import sqlalchemy as sa

from ..clock import clock
from ..errors import APIError
from ..events import store_events, transaction
from ..models import Favorite
from ..sql import built_once
from .batches import Batcher, app_batcher
from .favorites import (
    ADDED, REMOVED, accounts, bump_versions, checked, favorite_event, insert_favorite,
    write_one,
)

KEY = "saathii_favorite_changes"


def commit(kind, caller_id, listener_id):
    """Add (ADDED) or remove (REMOVED) a favorite and commit it; return (listener,
    changed). Written with the changes that arrive meanwhile, in one transaction (see
    write_changes)."""
    return batcher().submit((kind, caller_id, listener_id))


def batcher():
    """The app's batcher of favorite changes."""
    return app_batcher(KEY, lambda timeout: Batcher(write_changes, timeout))


@built_once
def _delete_favorites():
    return (
        sa.delete(Favorite)
        .where(sa.tuple_(Favorite.user_id, Favorite.listener_id)
               .in_(sa.bindparam("pairs", expanding=True)))
        .returning(Favorite.user_id, Favorite.listener_id)
    )


def _write_all(connection, changes, now):
    """Add and remove distinct favorites: one statement for the adds, one for the
    removes (sorted: concurrent batches of other processes mostly wait for each other
    rather than deadlock, and a deadlock's victim is written again, see batches); the
    (kind, caller id, listener id) that changed something."""
    adds = sorted((c, l) for kind, c, l in changes if kind == ADDED)
    removes = sorted((c, l) for kind, c, l in changes if kind == REMOVED)
    done = set()
    if adds:
        rows = connection.execute(insert_favorite(), [
            {"caller": c, "listener": l, "now": now} for c, l in adds])
        done.update((ADDED, c, l) for c, l in rows)
    if removes:
        rows = connection.execute(_delete_favorites(), {"pairs": removes})
        done.update((REMOVED, c, l) for c, l in rows)
    return done


def write_changes(items, events):
    """Apply (kind, caller id, listener id) favorite changes of many users in one
    transaction: the accounts read in one statement, each change checked by the same
    rules, the adds written in one statement and the removes in another (each in turn
    when one favorite is changed twice in the batch), the changed callers' versions
    moved in one statement, their events stored in one statement, one commit; the
    events appended to events. Per item: (listener, changed) or the error refusing it."""
    now = clock.now()
    with transaction(events) as connection:
        ids = {user_id for _, caller_id, listener_id in items
               for user_id in (caller_id, listener_id)}
        users = {row.id: row for row in connection.execute(accounts(),
                                                           {"ids": sorted(ids)})}
        results, valid = [], []
        for kind, caller_id, listener_id in items:
            try:
                caller, listener = checked(kind, users, caller_id, listener_id)
            except APIError as err:
                results.append(err)
                continue
            results.append((listener, False))
            valid.append((len(results) - 1, kind, caller, listener_id))
        changes = [(kind, caller.id, listener_id) for _, kind, caller, listener_id in valid]
        if len({change[1:] for change in changes}) == len(changes):
            done = _write_all(connection, changes, now)
            changed = [change in done for change in changes]
        else:
            changed = [write_one(connection, *change, now) for change in changes]
        callers = set()
        for (index, kind, caller, listener_id), did in zip(valid, changed):
            if did:
                results[index] = (results[index][0], True)
                callers.add(caller.id)
                events.append(favorite_event(kind, caller, listener_id, now))
        if callers:
            connection.execute(bump_versions(), {"ids": sorted(callers)})
        store_events(connection, events)
    return results
