"""Presence that follows the feed socket, in one process, on a clock the tests move: an
open socket keeps its user online, the last one closing takes them offline after the
grace (once), a reconnect within it changes nothing, a socket held elsewhere or a dead
process's lease decide as docs/api.md says."""
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from saathii.clock import clock
from saathii.domain import held_sockets
from saathii.domain.sweeper import sweep
from saathii.extensions import db
from saathii.models import HeldSocket, SocketProcess

from .sockets import raw_feed

GRACE = 10


@pytest.fixture
def config(config):
    class SocketPresenceConfig(config):
        PRESENCE_FROM_SOCKETS = True
        OFFLINE_GRACE_SECONDS = GRACE
        SOCKET_PRESENCE_TICK_SECONDS = 0  # the tests tick
    return SocketPresenceConfig


@pytest.fixture
def presence(app):
    return app.extensions["saathii_realtime"].presence


def tick(app, presence, seconds=0):
    clock.advance(seconds)
    presence.tick()


def run_for(app, presence, seconds, step=3):
    """Time passing as in a live process: a tick every `step` seconds (within a third of
    the lease, as the thread renews it) and a sweep every SWEEP_INTERVAL_SECONDS."""
    swept = 0
    for _ in range(int(seconds // step)):
        tick(app, presence, step)
        swept += step
        if swept >= app.config["SWEEP_INTERVAL_SECONDS"]:
            assert run_sweep(app).taken_offline == 0
            swept = 0


def run_sweep(app):
    with app.app_context():
        result = sweep()
        db.session.remove()
        return result


def status(client, account):
    response = client.get("/both/status/me", headers=account.headers)
    assert response.status_code == 200, response.json
    return response.json


def closed(app, socket):
    """Close a socket and wait until the server has let it go."""
    hub = app.extensions["saathii_realtime"].hub
    held = hub.count()
    socket.close()
    deadline = time.monotonic() + 5
    while hub.count() >= held:
        assert time.monotonic() < deadline, "the server still holds the socket"
        time.sleep(0.01)


@pytest.fixture
def fan(client, connect, customer, listener):
    """A customer who favorited the listener, with a socket open: hears their presence."""
    response = client.post("/favorites/add", json={"listener_id": listener.id},
                           headers=customer.headers)
    assert response.status_code == 200, response.json
    return connect(customer)


def test_opening_a_socket_brings_the_user_online_and_tells_their_fans(
        app, client, connect, fan, listener):
    assert status(client, listener)["is_online"] is False
    connect(listener)
    event = fan.receive()
    assert (event["type"], event["data"]["user_id"], event["data"]["is_online"]) == (
        "listener_online", listener.id, True)
    assert status(client, listener)["is_online"] is True


def test_an_open_socket_keeps_its_user_online_without_heartbeats(
        app, client, connect, listener, presence):
    connect(listener)
    seen = status(client, listener)["last_seen"]
    run_for(app, presence, 3 * app.config["PRESENCE_TIMEOUT_SECONDS"])
    body = status(client, listener)
    assert body["is_online"] is True
    assert body["last_seen"] > seen


def test_without_the_refresh_the_sweeper_would_take_them(app, client, connect, listener):
    """The control for the test above: the same socket, nobody ticking."""
    connect(listener)
    clock.advance(app.config["PRESENCE_TIMEOUT_SECONDS"] + 1)
    assert run_sweep(app).taken_offline == 1
    assert status(client, listener)["is_online"] is False


def test_the_last_socket_closing_takes_the_user_offline_after_the_grace_once(
        app, client, connect, fan, listener, presence):
    first, second = connect(listener), connect(listener)
    assert fan.receive()["type"] == "listener_online"
    closed(app, first)  # one of two: still held here
    tick(app, presence, GRACE + 1)
    assert status(client, listener)["is_online"] is True
    closed(app, second)
    tick(app, presence, GRACE - 1)
    assert status(client, listener)["is_online"] is True
    tick(app, presence, 1)
    body = status(client, listener)
    assert (body["is_online"], body["is_busy"]) == (False, False)
    event = fan.receive()
    assert (event["type"], event["data"]["user_id"]) == ("listener_offline", listener.id)
    tick(app, presence, GRACE)
    assert run_sweep(app).taken_offline == 0
    fan.expect_nothing_queued()  # offline once
    with app.app_context():
        assert db.session.scalars(sa.select(HeldSocket.user_id)).all() == [fan.hello[
            "data"]["user_id"]]  # the listener's row is gone, the fan's stays


def test_a_reconnect_within_the_grace_changes_nothing(
        app, client, connect, fan, listener, presence):
    socket = connect(listener)
    assert fan.receive()["type"] == "listener_online"
    closed(app, socket)
    tick(app, presence, GRACE - 1)
    connect(listener)
    tick(app, presence, GRACE * 3)
    assert status(client, listener)["is_online"] is True
    fan.expect_nothing_queued()  # no offline, no online


def test_a_heartbeat_after_the_socket_closed_keeps_the_rest_rules(
        app, client, connect, listener, presence):
    """A client that goes on with REST heartbeats once its socket is gone is online by
    them, as a client without a socket is."""
    closed(app, connect(listener))
    clock.advance(1)
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200
    tick(app, presence, GRACE)
    assert status(client, listener)["is_online"] is True
    clock.advance(app.config["PRESENCE_TIMEOUT_SECONDS"] + 1)
    assert run_sweep(app).taken_offline == 1  # then the heartbeat timeout, as ever


def test_a_socket_held_by_a_live_process_elsewhere_keeps_the_user_online(
        app, client, connect, listener, presence):
    closed(app, connect(listener))
    with app.app_context():
        held_sockets.renew("elsewhere", clock.now(), 30)
        held_sockets.hold("elsewhere", [listener.id])
        db.session.remove()
    tick(app, presence, GRACE)
    assert status(client, listener)["is_online"] is True
    clock.advance(30)  # the other process's lease runs out: it is gone, and its users
    assert run_sweep(app).orphans_offline == 1
    assert status(client, listener)["is_online"] is False


def connected_then_offline(client, connect, fan, listener):
    """The listener opens a socket (online), then sets themselves offline; the fan hears
    both."""
    connect(listener)
    assert fan.receive()["type"] == "listener_online"
    response = client.put("/both/status/me", json={"is_online": False},
                          headers=listener.headers)
    assert response.status_code == 200, response.json
    assert fan.receive()["type"] == "listener_offline"


def test_an_open_socket_never_brings_back_a_user_who_went_offline(
        app, client, connect, fan, listener, presence):
    connected_then_offline(client, connect, fan, listener)
    run_for(app, presence, 2 * app.config["PRESENCE_TIMEOUT_SECONDS"])
    assert status(client, listener)["is_online"] is False
    fan.expect_nothing_queued()
    connect(listener)  # a new socket is the user's doing: online again
    assert fan.receive()["type"] == "listener_online"


def test_busy_stays_the_users_while_the_socket_keeps_them(
        app, client, connect, listener, presence):
    connect(listener)
    response = client.put("/both/status/me", json={"is_busy": True},
                          headers=listener.headers)
    assert response.status_code == 200, response.json
    run_for(app, presence, 2 * app.config["PRESENCE_TIMEOUT_SECONDS"])
    body = status(client, listener)
    assert (body["is_online"], body["is_busy"]) == (True, True)


def test_a_process_that_lost_its_lease_but_lives_brings_its_users_back(
        app, client, connect, fan, listener, presence):
    """A process whose lease ran out (its database stalled past SOCKET_LEASE_SECONDS, say)
    is taken for dead: the sweep takes its users offline. Once it renews, it finds the
    lease lost, holds its users again and beats them: their sockets are open."""
    connect(listener)
    assert fan.receive()["type"] == "listener_online"
    presence.tick()
    clock.advance(app.config["SOCKET_LEASE_SECONDS"] + 1)  # no renewal meanwhile
    assert run_sweep(app).orphans_offline == 2  # the listener and the fan
    heard = [fan.receive()["type"] for _ in range(2)]
    assert sorted(heard) == ["listener_offline", "presence_update"]  # and the fan's own
    presence.tick()
    heard = [fan.receive()["type"] for _ in range(2)]
    assert sorted(heard) == ["listener_online", "presence_update"]
    assert status(client, listener)["is_online"] is True
    with app.app_context():
        held = sorted(db.session.scalars(sa.select(HeldSocket.user_id)))
    assert held == sorted([listener.id, fan.hello["data"]["user_id"]])


def test_a_lost_lease_brings_back_only_those_the_sweep_took(
        app, client, connect, listener, make_user, presence):
    """Of a process's users, one who went offline themselves while its lease held stays
    offline when it finds the lease lost; one the sweep took offline comes back."""
    resting = make_user("resting_listener", "listener")
    connect(listener), connect(resting)
    presence.tick()
    clock.advance(app.config["SOCKET_LEASE_SECONDS"] - 1)  # while the lease holds
    response = client.put("/both/status/me", json={"is_online": False},
                          headers=resting.headers)
    assert response.status_code == 200, response.json
    assert response.json["is_online"] is False
    clock.advance(2)  # the lease has run out, with no renewal meanwhile
    assert run_sweep(app).orphans_offline == 1  # the listener; the resting one was off
    assert status(client, listener)["is_online"] is False
    presence.tick()
    assert status(client, listener)["is_online"] is True
    body = status(client, resting)
    assert (body["is_online"], body["is_busy"]) == (False, False)


def test_users_owed_by_a_lost_lease_are_brought_back_once_the_database_answers(
        app, client, connect, listener, presence, monkeypatch):
    """The renewal that finds the lease lost commits before its users are brought back:
    if that write fails, the round's other work goes on and the next round writes it
    (the lease, renewed, no longer says lost)."""
    from saathii.domain import beats

    connect(listener)
    presence.tick()
    clock.advance(app.config["SOCKET_LEASE_SECONDS"] + 1)
    assert run_sweep(app).orphans_offline == 1
    real = beats.bring_back

    def failing(*args, **kwargs):
        raise sa.exc.OperationalError("UPDATE", {}, Exception("the database went away"))

    monkeypatch.setattr(beats, "bring_back", failing)
    presence.tick()  # the round goes on: held again, not yet online
    assert status(client, listener)["is_online"] is False
    with app.app_context():
        assert db.session.scalars(sa.select(HeldSocket.user_id)).all() == [listener.id]
        db.session.remove()
    monkeypatch.setattr(beats, "bring_back", real)
    presence.tick()
    assert status(client, listener)["is_online"] is True


def test_live_processes_find_a_dead_one_without_the_sweeper(
        app, client, listener, presence):
    """The sweeper's lease may have died with the process: each live process looks for
    run-out leases when it renews its own."""
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200
    with app.app_context():
        held_sockets.renew("dead", clock.now(), 10)
        held_sockets.hold("dead", [listener.id])
        db.session.remove()
    tick(app, presence, 5)
    assert status(client, listener)["is_online"] is True  # its lease still runs
    run_for(app, presence, 9, step=3)  # no sweep: SWEEP_INTERVAL_SECONDS is 15
    assert status(client, listener)["is_online"] is False
    with app.app_context():
        assert db.session.scalars(sa.select(SocketProcess.process)).all() == [
            presence.process]


def test_a_stopped_process_holds_no_one_for_the_others(
        app, client, connect, listener, presence):
    """A process that closed its sockets to stop times the hand-over with its lease, but
    keeps no one online: a user back elsewhere whose socket there closes goes offline
    after the grace, as anyone."""
    with app.app_context():
        held_sockets.renew("stopped", clock.now(), 60, stopping=True)
        held_sockets.hold("stopped", [listener.id])
        db.session.remove()
    closed(app, connect(listener))
    tick(app, presence, GRACE)
    assert status(client, listener)["is_online"] is False


def test_a_dead_process_users_go_offline_once_its_lease_runs_out(
        app, client, listener, customer, make_user):
    """A process that died holding sockets: after its lease, the sweep takes offline its
    users seen nowhere since, but not one seen since (a socket elsewhere beat) nor one
    a live process holds."""
    third = make_user("third_listener")
    for account in (listener, customer, third):
        assert client.post("/both/status/heartbeat",
                           headers=account.headers).status_code == 200
    with app.app_context():
        held_sockets.renew("dead", clock.now(), 10)
        held_sockets.renew("alive", clock.now(), 60)
        held_sockets.hold("dead", [listener.id, customer.id, third.id])
        held_sockets.hold("alive", [third.id])
        db.session.remove()
    clock.advance(5)
    client.post("/both/status/heartbeat", headers=customer.headers)  # came back elsewhere
    clock.advance(5)  # the lease has run out
    assert run_sweep(app).orphans_offline == 1
    assert [status(client, account)["is_online"] for account in (listener, customer, third)] \
        == [False, True, True]
    with app.app_context():
        processes = db.session.scalars(sa.select(SocketProcess.process)).all()
        held = db.session.execute(sa.select(HeldSocket.process, HeldSocket.user_id)).all()
    assert processes == ["alive"]
    assert held == [("alive", third.id)]


def test_a_stopping_process_hands_its_users_over(app, client, connect, listener, presence):
    """Closing its sockets to stop, a process takes nobody offline itself: those who come
    back within the reconnect window stay online; the rest go once its lease runs out."""
    connect(listener)
    realtime = app.extensions["saathii_realtime"]
    realtime.shut_down()
    hub = realtime.hub
    deadline = time.monotonic() + 5
    while hub.users():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with app.app_context():
        expires = db.session.scalar(sa.select(SocketProcess.expires_at))
    window = (expires - clock.now()).total_seconds()
    assert GRACE < window <= GRACE + app.config["FEED_RESTART_SECONDS"] + 1
    presence.tick()
    assert status(client, listener)["is_online"] is True
    clock.advance(window)
    assert run_sweep(app).orphans_offline == 1
    assert status(client, listener)["is_online"] is False


def test_socket_presence_can_be_turned_off(app_with, listener):
    app = app_with(PRESENCE_FROM_SOCKETS=False)
    assert app.extensions["saathii_realtime"].presence is None
    assert app.extensions["saathii_realtime"].hub.presence is None


def test_held_rows_hold_users_once(app, listener):
    with app.app_context():
        held_sockets.renew("here", clock.now(), 10)
        held_sockets.hold("here", [listener.id])
        held_sockets.hold("here", [listener.id, 999_999])  # twice, and a user who is gone
        rows = db.session.execute(sa.select(HeldSocket.user_id)).all()
    assert rows == [(listener.id,)]


def test_a_renewal_that_finds_its_lease_gone_holds_everyone_again(
        app, connect, listener, presence):
    connect(listener)
    presence.tick()
    with app.app_context():
        db.session.execute(sa.delete(HeldSocket))
        db.session.execute(sa.delete(SocketProcess))  # as a sweep after a long stall does
        db.session.commit()
    tick(app, presence, app.config["SOCKET_LEASE_SECONDS"])
    with app.app_context():
        rows = db.session.execute(sa.select(HeldSocket.user_id)).all()
        expires = db.session.scalar(sa.select(SocketProcess.expires_at))
    assert rows == [(listener.id,)]
    assert expires == clock.now() + timedelta(seconds=app.config["SOCKET_LEASE_SECONDS"])


def test_a_socket_that_stops_answering_pings_lets_its_user_go(
        app, client, live_server, listener, presence):
    """Liveness comes from the feed's pings: a peer that answers none is closed at the
    next ping (within two FEED_PING_INTERVAL_SECONDS), and its user goes offline after the
    grace."""
    app.config["SOCK_SERVER_OPTIONS"] = {**app.config["SOCK_SERVER_OPTIONS"],
                                         "ping_interval": 0.2}
    raw = raw_feed(live_server, listener.token)
    hub = app.extensions["saathii_realtime"].hub
    deadline = time.monotonic() + 5
    while hub.count() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert status(client, listener)["is_online"] is True
    while hub.count():  # never answered: closed by the server
        assert time.monotonic() < deadline
        time.sleep(0.02)
    raw.close()
    tick(app, presence, GRACE)
    assert status(client, listener)["is_online"] is False


def beat(client, account):
    response = client.post("/both/status/heartbeat", headers=account.headers)
    assert (response.status_code, response.json) == (200, {"message": "Heartbeat received"})


def test_a_socket_holder_who_went_offline_is_brought_online_by_a_beat(
        app, client, connect, fan, listener, presence):
    connected_then_offline(client, connect, fan, listener)
    clock.advance(1)  # an open socket, and offline: the beat is theirs
    beat(client, listener)
    assert status(client, listener)["is_online"] is True
    event = fan.receive()
    assert (event["type"], event["data"]["user_id"]) == ("listener_online", listener.id)
