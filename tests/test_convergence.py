"""Every screen converges to the truth: presence is delivered in status-version order,
whatever order the changes reach a process in (its own at once, others' through the
relay), and REST's reads carry the same version."""
from saathii.domain import status_updates
from saathii.events import Event
from saathii.realtime import realtime
from saathii.realtime.hub import Connection, Hub

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
    hub, fan = Hub(), Connection(ws=None, user_id=2)
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
    fan = Connection(ws=None, user_id=2)
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
