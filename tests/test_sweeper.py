"""The presence sweeper, on a clock the tests move: lapsed users go offline once, on time."""
import threading

import sqlalchemy as sa

from saathii.clock import clock
from saathii.domain import lease
from saathii.domain.sweeper import lapsed, sweep
from saathii.extensions import db
from saathii.models import FeedEvent, UserStatus
from saathii.scheduler import LEASE_NAME, Sweeper


def status(client, account):
    return client.get("/both/status/me", headers=account.headers).json


def run_sweep(app):
    with app.app_context():
        result = sweep()
        db.session.remove()
        return result


def test_lapsed_user_goes_offline_after_the_timeout_and_not_before(
        app, client, listener, events):
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 30},
               headers=listener.headers)
    events.clear()
    clock.advance(120)  # exactly the timeout: not yet lapsed
    assert run_sweep(app).taken_offline == 0
    assert status(client, listener)["is_online"] is True
    clock.advance(1)
    assert run_sweep(app).taken_offline == 1
    body = status(client, listener)
    assert (body["is_online"], body["is_busy"], body["wait_time"]) == (False, False, None)
    assert [(e.type, e.subject_id, e.data["is_online"]) for e in events] == [
        ("listener_offline", listener.id, False)]
    assert run_sweep(app).taken_offline == 0  # nothing twice
    assert len(events) == 1


def test_heartbeats_keep_a_user_online(app, client, listener):
    for _ in range(5):
        client.post("/both/status/heartbeat", headers=listener.headers)
        clock.advance(60)
        assert run_sweep(app).taken_offline == 0
    assert status(client, listener)["is_online"] is True


def test_a_heartbeat_brings_a_swept_user_back(app, client, customer, events):
    client.post("/both/status/heartbeat", headers=customer.headers)
    clock.advance(500)
    run_sweep(app)
    client.post("/both/status/heartbeat", headers=customer.headers)
    assert status(client, customer)["is_online"] is True
    assert [e.type for e in events] == ["presence_update"] * 3
    assert [e.data["is_online"] for e in events] == [True, False, True]


def test_only_lapsed_users_are_swept(app, client, make_user):
    gone, here = make_user("gone", "listener"), make_user("here", "listener")
    client.post("/both/status/heartbeat", headers=gone.headers)
    clock.advance(100)
    client.post("/both/status/heartbeat", headers=here.headers)
    clock.advance(30)
    assert run_sweep(app).taken_offline == 1
    assert status(client, gone)["is_online"] is False
    assert status(client, here)["is_online"] is True


def test_busy_expires_after_wait_time_plus_grace(app, client, listener, events):
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 5},
               headers=listener.headers)
    events.clear()
    for _ in range(5):  # keep heartbeating so the timeout is not what ends it
        clock.advance(100)
        client.post("/both/status/heartbeat", headers=listener.headers)
    clock.advance(5 * 60 + 300 - 500 - 1)  # one second before wait_time plus grace
    assert run_sweep(app).busy_ended == 0
    assert status(client, listener)["is_busy"] is True
    clock.advance(1)
    assert run_sweep(app).busy_ended == 1
    body = status(client, listener)
    assert (body["is_online"], body["is_busy"], body["wait_time"]) == (True, False, None)
    assert [e.type for e in events] == ["listener_available"]
    assert run_sweep(app).busy_ended == 0


def test_busy_without_wait_time_does_not_expire(app, client, listener):
    client.put("/both/status/me", json={"is_busy": True}, headers=listener.headers)
    for _ in range(10):
        clock.advance(100)
        client.post("/both/status/heartbeat", headers=listener.headers)
    assert run_sweep(app).busy_ended == 0
    assert status(client, listener)["is_busy"] is True


def test_stored_events_are_pruned_after_the_retention(app, client, customer, listener):
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    clock.advance(24 * 3600 - 1)
    assert run_sweep(app).events_pruned == 0
    clock.advance(2)
    assert run_sweep(app).events_pruned == 1
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(FeedEvent)) == 0


def test_the_lease_lets_one_holder_sweep(app):
    with app.app_context():
        assert lease.acquire(LEASE_NAME, "a", 30) is True
        assert lease.acquire(LEASE_NAME, "b", 30) is False
        assert lease.acquire(LEASE_NAME, "a", 30) is True  # renewed by its holder
        clock.advance(31)
        assert lease.acquire(LEASE_NAME, "b", 30) is True  # ran out: taken over
        assert lease.acquire(LEASE_NAME, "a", 30) is False


def test_a_second_scheduler_skips_while_the_first_holds_the_lease(
        app, client, make_user, events):
    app.config["PRESENCE_TIMEOUT_SECONDS"] = 10
    first, second = Sweeper(app), Sweeper(app)
    assert first.lease_seconds == 45  # three 15-second intervals
    user = make_user("gone", "listener")
    client.post("/both/status/heartbeat", headers=user.headers)
    assert first.run().taken_offline == 0
    clock.advance(30)
    assert second.run() is None  # skipped: the lease is the first one's
    assert status(client, user)["is_online"] is True
    assert first.run().taken_offline == 1
    assert [e.type for e in events] == ["listener_online", "listener_offline"]
    clock.advance(46)  # the first holder went quiet: its lease runs out
    assert second.run() is not None
    assert first.run() is None


def test_racing_sweeps_announce_each_user_once(app, client, make_user, events):
    users = [make_user(f"l{n}", "listener") for n in range(40)]
    for user in users:
        client.post("/both/status/heartbeat", headers=user.headers)
    events.clear()
    clock.advance(300)
    barrier = threading.Barrier(3)

    def race():
        barrier.wait()
        run_sweep(app)

    threads = [threading.Thread(target=race) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    offline = [e.subject_id for e in events if e.type == "listener_offline"]
    assert sorted(offline) == sorted(u.id for u in users)
    for user in users:
        assert status(client, user)["is_online"] is False


def test_the_sweep_query_uses_the_partial_index(app):
    with app.app_context():
        dialect = db.engine.dialect
        query = lapsed(clock.now()).with_only_columns(UserStatus.user_id)
        sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.name == "postgresql":
            db.session.execute(sa.text("SET enable_seqscan = off"))
            explain = "EXPLAIN"
        else:
            explain = "EXPLAIN QUERY PLAN"
        plan = " ".join(str(row) for row in db.session.execute(sa.text(f"{explain} {sql}")))
        assert "ix_user_status_online_last_seen" in plan, plan
