"""Conditional GET: weak ETags on favorites lists, my status and presence look-ups; a
matching If-None-Match gets 304 (from memory while nothing heard touches the answer);
every change an answer shows gives a new ETag."""
import time

import pytest

from saathii.clock import clock
from saathii.events import Event
from saathii.revalidation import Changes, Mark, etag_of

LISTS = ["", "?page=1&per_page=5", "?limit=5", "?online_only=true", "?available_only=true&page=1"]


@pytest.fixture
def realtime(app):
    """The app's Realtime, once its relay carries events (304s from memory need it)."""
    ours = app.extensions["saathii_realtime"]
    with app.app_context():
        deadline = time.monotonic() + 10
        while ours.relay_connected(wait=1) is False:
            assert time.monotonic() < deadline, "the relay did not connect"
    return ours


@pytest.fixture
def favorited(client, customer, listener):
    response = client.post("/favorites/add", json={"listener_id": listener.id},
                           headers=customer.headers)
    assert response.status_code == 200, response.json
    return listener


def get(client, account, path, etag=None):
    headers = dict(account.headers)
    if etag is not None:
        headers["If-None-Match"] = etag
    return client.get(path, headers=headers)


def reads(statements):
    """The statements that read the service's own tables (not the relay's probes)."""
    return [s for s in statements if any(t in s for t in ("favorites", "user_status", "users"))]


def assert_not_modified(response, etag):
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag


@pytest.mark.parametrize("query", LISTS)
def test_a_list_revalidates_with_its_etag(client, customer, favorited, realtime, executed,
                                          query):
    first = get(client, customer, "/favorites" + query)
    assert first.status_code == 200, first.json
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    assert first.headers["Cache-Control"] == "private, no-cache"
    executed.clear()
    assert_not_modified(get(client, customer, "/favorites" + query, etag), etag)
    assert reads(executed)  # the first conditional GET reads, and is remembered
    executed.clear()
    assert_not_modified(get(client, customer, "/favorites" + query, etag), etag)
    assert reads(executed) == []  # from memory: no database at all
    other = get(client, customer, "/favorites" + query, 'W/"something-else"')
    assert other.status_code == 200
    assert other.json == first.json and other.headers["ETag"] == etag


def test_a_favorites_presence_change_changes_the_etag(client, customer, favorited, realtime):
    etag = get(client, customer, "/favorites").headers["ETag"]
    client.post("/both/status/heartbeat", headers=favorited.headers)  # comes online
    changed = get(client, customer, "/favorites", etag)
    assert changed.status_code == 200
    assert changed.json["favorites"][0]["is_online"] is True
    assert changed.json["online_count"] == 1
    assert changed.headers["ETag"] != etag
    etag = changed.headers["ETag"]
    clock.advance(30)
    client.post("/both/status/heartbeat", headers=favorited.headers)  # last_seen only
    assert_not_modified(get(client, customer, "/favorites", etag), etag)
    client.put("/both/status/me", json={"is_busy": True}, headers=favorited.headers)
    busy = get(client, customer, "/favorites", etag)
    assert busy.status_code == 200 and busy.json["favorites"][0]["is_busy"] is True


def test_a_favorite_added_or_removed_changes_the_etag(
        client, customer, favorited, make_user, realtime):
    etag = get(client, customer, "/favorites").headers["ETag"]
    other = make_user("second_listener")
    client.post("/favorites/add", json={"listener_id": other.id}, headers=customer.headers)
    added = get(client, customer, "/favorites", etag)
    assert added.status_code == 200 and added.json["total_count"] == 2
    client.delete("/favorites/remove", json={"listener_id": other.id},
                  headers=customer.headers)
    removed = get(client, customer, "/favorites", added.headers["ETag"])
    assert removed.status_code == 200 and removed.json["total_count"] == 1
    assert removed.headers["ETag"] == etag  # the same list as at first: the same ETag


def test_an_event_heard_from_another_process_makes_the_memory_stale(
        app, client, customer, favorited, realtime, executed):
    """What another process changed arrives through the relay as an event: the 304
    from memory stops, and the next answer is read."""
    etag = get(client, customer, "/favorites").headers["ETag"]
    assert_not_modified(get(client, customer, "/favorites", etag), etag)  # remembered
    realtime.hub.dispatch(Event("listener_online", {"user_id": favorited.id, "version": 99},
                                subject_id=favorited.id))
    executed.clear()
    assert_not_modified(get(client, customer, "/favorites", etag), etag)  # unchanged in fact
    assert reads(executed)  # but read to know it


def test_a_relay_outage_voids_the_memory(client, customer, favorited, realtime, executed):
    """Events may be missed while the relay is down (or loses a probe): nothing remembered
    from before is trusted once it is back, even before its resync runs."""
    if realtime.relay is None:
        pytest.skip("one process with no relay (SQLite): no outage to miss events in")
    etag = get(client, customer, "/favorites").headers["ETag"]
    assert_not_modified(get(client, customer, "/favorites", etag), etag)  # remembered
    health = realtime.relay.health
    health.lost("a test outage")
    executed.clear()
    assert_not_modified(get(client, customer, "/favorites", etag), etag)  # down: read
    assert reads(executed)
    health.up.set()  # back, as heard() sets it, before any resync
    executed.clear()
    assert_not_modified(get(client, customer, "/favorites", etag), etag)
    assert reads(executed)  # the entry from before the outage is void


def test_memory_expires_after_the_max_age(app, client, customer, favorited, realtime,
                                          executed):
    now = [0.0]
    realtime.hub.changes.monotonic = lambda: now[0]
    etag = get(client, customer, "/favorites").headers["ETag"]
    assert_not_modified(get(client, customer, "/favorites", etag), etag)  # remembered
    now[0] += app.config["CONDITIONAL_GET_MAX_AGE_SECONDS"] + 1
    executed.clear()
    assert_not_modified(get(client, customer, "/favorites", etag), etag)
    assert reads(executed)  # a listener's profile edit would show now


def test_a_deactivated_account_gets_401_once_the_memory_expires(
        app, client, customer, favorited, realtime):
    from saathii.extensions import db
    from saathii.models import User
    etag = get(client, customer, "/favorites").headers["ETag"]
    assert_not_modified(get(client, customer, "/favorites", etag), etag)  # remembered
    with app.app_context():
        db.session.get(User, customer.id).is_active = False
        db.session.commit()
    now = [realtime.hub.changes.monotonic() + 31]
    realtime.hub.changes.monotonic = lambda: now[0]  # past CONDITIONAL_GET_MAX_AGE_SECONDS
    assert get(client, customer, "/favorites", etag).status_code == 401


def test_my_status_revalidates(client, listener, realtime, executed):
    first = get(client, listener, "/both/status/me")
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert_not_modified(get(client, listener, "/both/status/me", etag), etag)  # remembered
    executed.clear()
    assert_not_modified(get(client, listener, "/both/status/me", etag), etag)
    assert reads(executed) == []
    assert_not_modified(get(client, listener, "/users/me/status", etag), etag)
    client.post("/both/status/heartbeat", headers=listener.headers)  # comes online
    online = get(client, listener, "/both/status/me", etag)
    assert online.status_code == 200 and online.json["is_online"] is True
    assert online.headers["ETag"] != etag


def test_presence_look_ups_revalidate(client, customer, listener, realtime, executed):
    path = f"/users/presence?user_ids={listener.id}"
    first = get(client, customer, path)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert_not_modified(get(client, customer, path, etag), etag)  # remembered
    executed.clear()
    assert_not_modified(get(client, customer, path, etag), etag)
    assert reads(executed) == []
    single = get(client, customer, f"/users/{listener.id}/presence")
    assert_not_modified(get(client, customer, f"/users/{listener.id}/presence",
                            single.headers["ETag"]), single.headers["ETag"])
    # Another user's presence is another answer (the path is part of what is remembered).
    other = get(client, customer, f"/users/{customer.id}/presence", single.headers["ETag"])
    assert other.status_code == 200 and other.json["user_id"] == customer.id
    assert get(client, customer, "/users/99999/presence", "*").status_code == 404
    client.post("/both/status/heartbeat", headers=listener.headers)
    assert get(client, customer, path, etag).status_code == 200


def test_a_request_without_if_none_match_reads_no_more_than_before(
        client, customer, favorited, realtime, executed):
    """What a list depends on is read only for conditional requests: a client that never
    revalidates pays nothing for them (the statements of test_a_fixed_number_of_queries)."""
    assert get(client, customer, "/favorites?page=1").status_code == 200
    assert len(reads(executed)) == 2  # the page (with the account) and the counts


def test_errors_carry_no_etag(client, customer, realtime):
    response = get(client, customer, "/favorites?limit=0", "*")
    assert response.status_code == 400 and "ETag" not in response.headers
    assert "detail" in response.json


def test_off_every_conditional_get_reads(app_with, customer):
    app = app_with(CONDITIONAL_GET_MAX_AGE_SECONDS=0)
    client = app.test_client()
    first = get(client, customer, "/both/status/me")
    assert first.status_code == 200
    assert_not_modified(get(client, customer, "/both/status/me", first.headers["ETag"]),
                        first.headers["ETag"])


def test_the_etag_leaves_out_what_heartbeats_move():
    one = {"is_online": True, "last_seen": "a", "version": 3, "items": [{"version": 1}]}
    two = {"is_online": True, "last_seen": "b", "version": 4, "items": [{"version": 2}]}
    assert etag_of(one) == etag_of(two)
    assert etag_of(one) != etag_of({**one, "is_online": False})


def test_changes_remember_until_an_event_touches_the_answer():
    changes = Changes(30, monotonic=lambda: 0)
    mark = changes.mark()
    changes.remember("list", "e1", mark, users=[1, 2], favorites_of=7)
    assert changes.current("list") == "e1"
    changes.heard(Event("presence_update", {"version": 1}, subject_id=3))
    assert changes.current("list") == "e1"  # someone else's presence
    changes.heard(Event("favorite_added", {"user_id": 8}, subject_id=1))
    assert changes.current("list") == "e1"  # someone else's favorites
    changes.heard(Event("listener_busy", {"version": 1}, subject_id=2))
    assert changes.current("list") is None
    changes.remember("list", "e2", changes.mark(), users=[1, 2], favorites_of=7)
    changes.heard(Event("favorite_removed", {"user_id": 7}, subject_id=5))
    assert changes.current("list") is None


def test_changes_trust_nothing_from_before_the_relay_missed_events():
    relay = [0]
    changes = Changes(30, relay_epoch=lambda: relay[0], monotonic=lambda: 0)
    changes.remember("kept", "e1", changes.mark(), users=[1])
    stale = Mark(changes.sequence, relay[0])
    relay[0] += 1  # an outage, or a probe lost on the way
    assert changes.current("kept") is None
    changes.remember("read-before", "e2", stale, users=[1])  # read before it: not kept
    assert changes.current("read-before") is None
    changes.remember("read-after", "e3", changes.mark(), users=[1])
    assert changes.current("read-after") == "e3"


def test_a_conditional_list_counts_now_not_from_the_counts_cache(app_with, customer,
                                                                 listener):
    """Its answer is remembered with its ETag: counts reused from a moment ago would pin
    a stale online_count to a current-looking ETag."""
    client = app_with(FAVORITE_COUNTS_CACHE_SECONDS=60).test_client()
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    first = get(client, customer, "/favorites")
    assert first.json["online_count"] == 0  # and cached for a minute
    client.post("/both/status/heartbeat", headers=listener.headers)
    second = get(client, customer, "/favorites", first.headers["ETag"])
    assert second.status_code == 200
    assert (second.json["online_count"], second.json["favorites"][0]["is_online"]) == (1, True)
    assert get(client, customer, "/favorites").json["online_count"] == 0  # plain: cached
