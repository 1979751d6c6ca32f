"""Every screen converges to the truth: presence is delivered in status-version order,
whatever order the changes reach a process in (its own at once, others' through the
relay), and REST's reads carry the same version."""
import json
import threading
import time

import pytest
import sqlalchemy as sa

from config import Config
from saathii.domain import status_updates
from saathii.events import Event, store_events, stored_events
from saathii.extensions import db
from saathii.models import FeedEvent
from saathii.realtime import realtime
from saathii.realtime.hub import Connection, Hub

from .sockets import FeedClient
from .test_batches import status_row, written


def presence(user_id, version, is_busy):
    """A listener's presence event at a status version."""
    data = {"user_id": user_id, "username": "jane_smith", "is_online": True,
            "is_busy": is_busy, "wait_time": None, "is_available": not is_busy,
            "last_seen": None, "version": version}
    return Event("listener_busy" if is_busy else "listener_available", data, subject_id=user_id)


def queued(connection):
    """What a socket's writer would send next, in order."""
    return [envelope for envelope, _ in connection.pending.values()]


def test_an_older_presence_never_follows_a_newer_one():
    hub, fan = Hub(), Connection(ws=None, user_id=2, max_queued=Config.FEED_MAX_QUEUED)
    hub.add(fan)
    hub.set_watched(fan, favorites={1})
    hub.dispatch(presence(1, 5, is_busy=True))
    fan.pending.clear()  # sent
    hub.dispatch(presence(1, 4, is_busy=False))  # an older change, relayed late
    hub.dispatch(presence(1, 5, is_busy=True))   # the same change again
    assert queued(fan) == []
    hub.dispatch(presence(1, 6, is_busy=False))
    assert [m["data"]["version"] for m in queued(fan)] == [6]


def test_a_queued_presence_is_replaced_by_a_newer_version_only():
    fan = Connection(ws=None, user_id=2, max_queued=Config.FEED_MAX_QUEUED)
    fan.deliver({"v": 7}, presence_of=1, version=7)
    fan.deliver({"v": 6}, presence_of=1, version=6)  # arrived last, but older
    assert queued(fan) == [{"v": 7}]
    fan.deliver({"v": 8}, presence_of=1, version=8)
    assert queued(fan) == [{"v": 8}]
    fan.deliver({"other": 1}, presence_of=3, version=1)  # another user's: its own order
    assert queued(fan) == [{"v": 8}, {"other": 1}]


def test_a_socket_keeps_the_newer_of_two_changes_heard_out_of_order(
        app, client, connect, customer, listener):
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    fan = connect(customer)
    client.put("/both/status/me", json={"is_busy": True}, headers=listener.headers)
    busy = fan.receive()
    assert (busy["type"], busy["data"]["is_busy"]) == ("listener_busy", True)
    client.put("/both/status/me", json={"is_busy": False}, headers=listener.headers)
    available = fan.receive()
    assert available["type"] == "listener_available"
    assert available["data"]["version"] == busy["data"]["version"] + 1
    # Another process's older change, heard through the relay after this process's own.
    with app.app_context():
        realtime().hub.dispatch(presence(listener.id, busy["data"]["version"], is_busy=True))
    fan.expect_nothing_queued()
    # REST says the same, with the same version.
    seen = client.get(f"/users/{listener.id}/presence", headers=customer.headers).json
    assert (seen["is_available"], seen["version"]) == (True, available["data"]["version"])
    listed = client.get("/favorites", headers=customer.headers).json["favorites"]
    assert [(item["user_id"], item["version"]) for item in listed] == [
        (listener.id, available["data"]["version"])]


def test_two_changes_of_one_user_in_one_batch_carry_growing_versions(app, listener, events):
    with app.app_context():
        results = written(status_updates.write_updates, [(listener.id, {"is_busy": True}),
                                                         (listener.id, {"is_busy": False})])
    versions = [result["version"] for result in results]
    assert versions[1] == versions[0] + 1
    assert [(e.type, e.data["version"]) for e in events] == [
        ("listener_busy", versions[0]), ("listener_available", versions[1])]
    assert status_row(app, listener.id)[-1] == versions[1]


def test_a_recipients_event_ids_follow_commit_order(app, listener, customer, make_user):
    """The lower id committing last: a listener that got the higher id and reconnects
    with it as `since` would never get the lower. Each recipient's ids are therefore
    taken in commit order (PostgreSQL: a lock per recipient held to the commit; SQLite:
    one writer at a time)."""
    other = make_user("second_fan", "customer")
    committed, failures = [], []
    first_stored, first_may_commit = threading.Event(), threading.Event()

    def store(caller, stored, may_commit):
        """Store a favorite event for the listener in a transaction of its own."""
        try:
            with app.app_context():
                with db.engine.begin() as connection:
                    event = Event("favorite_added", {"user_id": caller.id}, listener.id)
                    store_events(connection, [event])
                    stored.set()
                    may_commit.wait(10)
                committed.append(event.id)
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(err)
            stored.set()

    first = threading.Thread(target=store, args=(customer, first_stored, first_may_commit))
    first.start()
    assert first_stored.wait(10)  # the first has its id, and holds its transaction open
    go = threading.Event()
    go.set()
    second = threading.Thread(target=store, args=(other, threading.Event(), go))
    second.start()
    second.join(0.5)  # long enough for it to commit, had it not waited for the first
    first_may_commit.set()
    first.join()
    second.join()
    assert failures == []
    assert committed == sorted(committed), "a later id committed first"
    with app.app_context():
        assert [e.id for e in stored_events(listener.id, 0)] == committed


def test_a_cursor_past_the_retention_window_is_a_reset(app, client, connect, live_server,
                                                      customer, listener, make_user):
    second = make_user("second_fan", "customer")
    for fan in (customer, second):
        assert client.post("/favorites/add", json={"listener_id": listener.id},
                           headers=fan.headers).status_code == 200
    with app.app_context():
        old, kept = stored_events(listener.id, 0)
        db.session.execute(sa.delete(FeedEvent).where(FeedEvent.id == old.id))  # pruned
        db.session.commit()
    socket = FeedClient(live_server, listener.token, since=old.id)
    try:
        hello = socket.receive()
        assert (hello["type"], hello["data"]) == ("connection_established", {
            "user_id": listener.id, "last_event_id": kept.id, "cursor_reset": True})
        replayed = socket.receive()  # what is kept is replayed
        assert (replayed["id"], replayed["data"]["user_id"]) == (kept.id, second.id)
        socket.expect_nothing_queued()
    finally:
        socket.close()
    # A cursor whose event is kept resumes after it, without a reset (connect checks).
    connect(listener, since=kept.id).expect_nothing_queued()


def favorite_change(kind, actor, listener_id):
    return Event(kind, {"user_id": actor, "username": "john_doe",
                        "action": "added_you_to_favorites"}, subject_id=listener_id)


def test_a_socket_watches_the_committed_favorites_whatever_the_greeting_read():
    """Favorite changes the socket's user makes while its greeting reads the favorites
    committed before or after that read: either way the socket watches what is
    committed once the snapshot is in place."""
    hub, socket = Hub(), Connection(ws=None, user_id=2, max_queued=Config.FEED_MAX_QUEUED)
    hub.add(socket)  # registered; the greeting now reads the favorites: {1, 3}
    hub.dispatch(favorite_change("favorite_added", 2, 4))     # after the read
    hub.dispatch(favorite_change("favorite_removed", 2, 3))   # after the read
    hub.dispatch(favorite_change("favorite_added", 2, 1))     # before it: in the snapshot
    hub.set_watched(socket, favorites={1, 3})
    assert socket.favorites == {1, 4}
    assert {user for user, watching in hub.watchers.items() if socket in watching} == {1, 4}
    hub.dispatch(favorite_change("favorite_removed", 2, 4))  # from now on, as they come
    assert socket.favorites == {1}
    hub.dispatch(presence(4, 9, is_busy=False))
    hub.dispatch(presence(1, 9, is_busy=False))
    assert [m["data"]["user_id"] for m in queued(socket)] == [1]


class RecordingSocket:
    """What a Connection's writer sends, recorded (and a close that ends it)."""

    def __init__(self):
        self.sent, self.event = [], threading.Event()

    def send(self, raw):
        self.sent.append(json.loads(raw))

    def close(self, code=1000, reason=None):
        pass


def written_by(connection, count):
    """Run the connection's writer until it has sent `count` messages; what it sent."""
    writer = threading.Thread(target=connection.write_loop)
    writer.start()
    deadline = time.monotonic() + 10
    while len(connection.ws.sent) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    connection.close()
    writer.join(10)
    return connection.ws.sent


def test_live_stored_events_go_out_in_id_order_read_from_the_store():
    """101 (this process's own change) is heard before 100 (another process's, committed
    first, relayed later): the writer sends 100 then 101, read from the store, and
    drops the late copy of 100, so a client that drops after 101 misses nothing."""
    store = {100: {"type": "favorite_added", "id": 100}, 101: {"type": "favorite_removed",
                                                              "id": 101}}
    socket = RecordingSocket()
    connection = Connection(ws=socket, user_id=1, max_queued=Config.FEED_MAX_QUEUED)
    connection.last_event_id = 99
    connection.fetch_stored = lambda after: [store[i] for i in sorted(store) if after < i]
    connection.deliver(store[101], event_id=101)
    connection.deliver(store[100], event_id=100)
    connection.deliver({"type": "pong"})
    sent = written_by(connection, 3)
    assert [m.get("id", m.get("type")) for m in sent] == [100, 101, "pong"]
    assert connection.last_event_id == 101


def test_a_live_stored_event_is_still_sent_when_the_store_cannot_be_read():
    def down(after):
        raise OSError("the database is down")

    socket = RecordingSocket()
    connection = Connection(ws=socket, user_id=1, max_queued=Config.FEED_MAX_QUEUED)
    connection.fetch_stored = down
    connection.deliver({"type": "favorite_added", "id": 7}, event_id=7)
    assert [m.get("id") for m in written_by(connection, 1)] == [7]


LOCKS = {  # what an outside transaction locks to block one user's change of each kind
    "status": "SELECT 1 FROM user_status WHERE user_id = :user FOR UPDATE",
    "favorite": "SELECT 1 FROM users WHERE id = :user FOR UPDATE",
}


def call(app, method, path, account, body=None):
    """A request on a test client of its own (one per thread): (status, JSON body)."""
    response = app.test_client().open(path, method=method, json=body,
                                      headers=account.headers)
    return response.status_code, response.json


@pytest.mark.parametrize("kind", ["heartbeat", "status", "favorite"])
def test_a_row_locked_elsewhere_holds_up_only_its_own_users_change(
        app, client, make_user, events, kind):
    """One user's row locked by an outside transaction: other users' changes of the same
    kind are answered while it holds the lock; the blocked user's change is written
    once the lock goes, and answered as it was written."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: no row locks")
    blocked, others = make_user("blocked_one"), [make_user(f"free_{n}") for n in range(3)]
    listener = make_user("favorited_listener")
    change = {"heartbeat": ("POST", "/both/status/heartbeat", None),
              "status": ("PUT", "/both/status/me", {"is_busy": True}),
              "favorite": ("POST", "/favorites/add", {"listener_id": listener.id})}[kind]
    if kind == "favorite":  # customers favoriting the listener
        blocked, *others = [make_user(f"fan_{n}", "customer") for n in range(4)]
    answers = {}

    def send(account):
        answers[account.id] = call(app, change[0], change[1], account, change[2])

    with app.app_context(), db.engine.connect() as outside:
        outside.execute(sa.text(LOCKS["favorite" if kind == "favorite" else "status"]),
                        {"user": blocked.id})
        stuck = threading.Thread(target=send, args=(blocked,))
        stuck.start()
        time.sleep(0.05)  # its batch is waiting for the lock (or about to)
        free = [threading.Thread(target=send, args=(account,)) for account in others]
        for thread in free:
            thread.start()
        for thread in free:
            thread.join(3)  # before the lock goes
        assert [answers.get(account.id, (None,))[0] for account in others] == [200] * 3
        assert stuck.is_alive()  # still waiting for the row
        outside.rollback()  # the lock goes
    stuck.join(10)
    assert answers[blocked.id][0] == 200
    if kind == "favorite":
        assert answers[blocked.id][1]["is_favorited"] is True
    else:
        status = client.get("/both/status/me", headers=blocked.headers).json
        assert status["is_online"] is True and status["is_busy"] is (kind == "status")
    # Its change was announced too (published once it committed, just after its answer).
    deadline = time.monotonic() + 5
    while not [e for e in events if blocked.id in (e.subject_id, e.data.get("user_id"))]:
        assert time.monotonic() < deadline, "the blocked change was never announced"
        time.sleep(0.02)
