"""State changes of many users written together: a batch of status updates, arrivals or
favorite changes is one transaction, each change keeps the rules it has alone, each
real change makes one event (published after the commit, none if it rolls back), and
one refused change refuses no other."""
import psycopg
import pytest
import sqlalchemy as sa

from saathii.clock import clock, isoformat
from saathii.domain import beats, favorite_changes, favorites, status_updates
from saathii.domain.batches import Batcher
from saathii.errors import APIError
from saathii.events import bus, stored_events
from saathii.extensions import db
from saathii.models import Favorite, User, UserStatus


def status_row(app, user_id):
    with app.app_context():
        row = db.session.get(UserStatus, user_id)
        return (row.is_online, row.is_busy, row.wait_time, row.version)


def written(write, items):
    """Write a batch as the batcher does (in an app context): its results, and then, as
    it has committed, its events published."""
    made = []
    results = write(items, made)
    for event in made:
        bus().publish(event)
    return results


def deactivate(app, account):
    with app.app_context():
        db.session.get(User, account.id).is_active = False
        db.session.commit()


def go_online(client, *accounts):
    for account in accounts:
        assert client.post("/both/status/heartbeat", headers=account.headers).status_code == 200


def test_status_updates_of_many_users_in_one_batch(app, client, make_user, events):
    first, second, gone = (make_user(f"toggler_{n}") for n in range(3))
    go_online(client, first, second)
    deactivate(app, gone)
    events.clear()
    clock.advance(5)
    with app.app_context():
        results = written(status_updates.write_updates, [
            (first.id, {"is_busy": True, "wait_time": 10}),
            (second.id, {"is_busy": True}),
            (first.id, {"is_busy": False}),  # the same user again: applied in turn
            (second.id, {"wait_time": 5, "is_online": False}),  # refused alone (409)
            (gone.id, {"is_busy": True}),  # no active account: left to the caller
        ])
    assert [r["is_busy"] if isinstance(r, dict) else r for r in results[:3]] == [
        True, True, False]
    assert results[0]["wait_time"] == 10 and results[2]["wait_time"] is None
    assert isinstance(results[3], APIError) and results[3].status == 409
    assert results[4] is None
    assert [(e.type, e.subject_id) for e in events] == [
        ("listener_busy", first.id), ("listener_busy", second.id),
        ("listener_available", first.id)]
    assert all(e.timestamp == clock.now() for e in events)
    # One write per user, whatever the number of updates: the version moved once.
    assert status_row(app, first.id)[:3] == (True, False, None)
    assert status_row(app, second.id)[:3] == (True, True, None)
    assert status_row(app, gone.id)[:2] == (False, False)
    with app.app_context():  # stored as UTC, whatever the database session's time zone
        row = db.session.get(UserStatus, second.id)
        assert row.last_seen == row.busy_since == row.updated_at == clock.now()


def test_a_failed_status_batch_changes_nothing_and_announces_nothing(
        app, client, listener, events, monkeypatch):
    go_online(client, listener)
    events.clear()
    before = status_row(app, listener.id)

    def broken(connection, statuses, read_versions):
        raise sa.exc.OperationalError("UPDATE", {}, Exception("disk full"))

    monkeypatch.setattr(status_updates, "_write_versioned", broken)
    with app.app_context(), pytest.raises(sa.exc.OperationalError):
        Batcher(status_updates.write_updates).submit((listener.id, {"is_busy": True}))
    assert status_row(app, listener.id) == before and events == []


def test_a_status_batch_that_lost_a_race_is_redone_on_fresh_rows(
        app, client, listener, events, monkeypatch):
    """The version check: a writer that moved the row between the read and the write
    (as the sweeper may) makes the batch roll back and run again, one event in all."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite: the batch holds the write lock, no writer gets in between")
    go_online(client, listener)
    events.clear()
    real, calls = status_updates._write_versioned, []

    def racing(connection, statuses, read_versions):
        calls.append(1)
        if len(calls) == 1:
            with db.engine.begin() as other:  # another writer moves the version
                other.execute(sa.update(UserStatus).where(UserStatus.user_id == listener.id)
                              .values(version=UserStatus.version + 1))
        return real(connection, statuses, read_versions)

    monkeypatch.setattr(status_updates, "_write_versioned", racing)
    # On PostgreSQL the batch's read locks the rows, so no writer gets in between: the
    # race is played with the read unlocked, against the version check alone.
    monkeypatch.setattr(status_updates, "_locked_statuses", status_updates._statuses_read)
    with app.app_context():
        results = written(status_updates.write_updates, [(listener.id, {"is_busy": True})])
    assert len(calls) == 2 and results[0]["is_busy"] is True
    assert [e.type for e in events] == ["listener_busy"]


def test_beats_bring_offline_users_online_in_one_batch(app, client, make_user, events):
    online, offline, customer, gone = (
        make_user("beat_online"), make_user("beat_offline"),
        make_user("beat_customer", "customer"), make_user("beat_gone"))
    go_online(client, online)
    deactivate(app, gone)
    events.clear()
    clock.advance(5)
    with app.app_context():
        applied = written(beats.write_beats,
                          [online.id, offline.id, customer.id, gone.id, offline.id])
    assert applied == [True, True, True, False, True]
    assert [(e.type, e.subject_id) for e in events] == [
        ("listener_online", offline.id), ("presence_update", customer.id)]
    assert events[0].data == {
        "user_id": offline.id, "username": "beat_offline", "is_online": True,
        "is_busy": False, "wait_time": None, "is_available": True,
        "last_seen": isoformat(clock.now()), "version": status_row(app, offline.id)[-1]}
    assert status_row(app, gone.id)[0] is False
    with app.app_context():  # a second beat of the same users changes no state
        written(beats.write_beats, [offline.id, customer.id])
    assert len(events) == 2


def test_a_beat_whose_user_another_writer_brought_online_meanwhile_is_written(
        app, client, listener, events, monkeypatch):
    """PostgreSQL: between the transaction's two statements (online users, arrivals)
    another writer brings the user online, so the row matches neither; the beat is still
    written (and answered 200, not 401 as for an account that is gone)."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite: the batch holds the write lock, no writer gets in between")
    real, calls = beats._bring_online, []

    def racing(connection, user_ids, now, made, applied):
        if not calls:
            with db.engine.begin() as other:  # another process's beat, committed first
                other.execute(sa.update(UserStatus).where(UserStatus.user_id == listener.id)
                              .values(is_online=True, last_seen=now,
                                      version=UserStatus.version + 1))
        calls.append(1)
        return real(connection, user_ids, now, made, applied)

    monkeypatch.setattr(beats, "_bring_online", racing)
    clock.advance(5)
    response = client.post("/both/status/heartbeat", headers=listener.headers)
    assert (response.status_code, response.json) == (200, {"message": "Heartbeat received"})
    assert calls == [1]  # the second round found the row online: no arrival to make
    with app.app_context():
        row = db.session.get(UserStatus, listener.id)
        assert (row.is_online, row.last_seen) == (True, clock.now())
    assert events == []  # the other writer's arrival is its own to announce


def test_an_online_users_beat_is_one_statement_of_its_own(app, client, make_user, events,
                                                          monkeypatch):
    """PostgreSQL: the beat of an online user whose row no one holds is written by one
    autocommit statement, with no transaction (BEGIN, id, COMMIT), as a beat would."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite: every beat is written in the batch's transaction")
    online = make_user("lone_beat")
    go_online(client, online)
    events.clear()
    version = status_row(app, online.id)[-1]

    def no_transaction(made):
        raise AssertionError("a transaction for the beat of an online user")

    monkeypatch.setattr(beats, "transaction", no_transaction)
    clock.advance(5)
    with app.app_context():
        assert written(beats.write_beats, [online.id, online.id]) == [True, True]
    status = client.get("/both/status/me", headers=online.headers).json
    assert status["last_seen"] == isoformat(clock.now()) and status["is_online"] is True
    assert status_row(app, online.id)[-1] == version + 1 and events == []


def test_beats_written_before_a_failed_transaction_are_answered_as_written(
        app, client, make_user, events, monkeypatch):
    """PostgreSQL: when the transaction for the rest of a batch fails, the beats the
    autocommit statement wrote are answered as written; only the rest get the error
    (503: not written), and nothing of the transaction is announced."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite: every beat is written in the batch's transaction")
    online, offline = make_user("written_first"), make_user("left_offline")
    go_online(client, online)
    events.clear()

    def failing(made):
        raise sa.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))

    monkeypatch.setattr(beats, "transaction", failing)
    with app.app_context():
        results = written(beats.write_beats, [online.id, offline.id])
    assert results[0] is True
    assert isinstance(results[1], APIError) and results[1].status == 503
    assert results[1].detail == "Service temporarily unavailable, try again shortly"
    assert status_row(app, offline.id)[0] is False and events == []


def test_a_beat_that_never_reached_the_database_is_not_of_unknown_outcome(
        app, client, make_user, monkeypatch):
    """PostgreSQL: no pooled connection to be had means the statement was never sent:
    the database's error as it is (a plain 503), not "may or may not have been saved"."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite: every beat is written in the batch's transaction")
    online = make_user("no_connection")
    go_online(client, online)

    def no_connection():
        raise psycopg.OperationalError("connection refused")

    with app.app_context():
        monkeypatch.setattr(db.engine, "raw_connection", no_connection)
        with pytest.raises(sa.exc.DBAPIError) as raised:
            beats.write_beats([online.id], [])
    assert raised.value.statement_sent is False


def test_an_online_users_beat_on_a_held_row_is_left_to_the_transaction(
        app, client, make_user, events):
    """PostgreSQL: a row another transaction holds is skipped by the autocommit statement
    (no wait there) and written by the transaction, once the row is free."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time: no row locks")
    held, free = make_user("held_beat"), make_user("free_beat")
    go_online(client, held, free)
    clock.advance(5)
    with app.app_context(), db.engine.connect() as outside:
        outside.execute(sa.text("SELECT 1 FROM user_status WHERE user_id = :user FOR UPDATE"),
                        {"user": held.id})
        assert beats._write_free_beats([held.id, free.id], clock.now()) == {free.id}
        outside.rollback()
        clock.advance(5)
        assert written(beats.write_beats, [held.id, free.id]) == [True, True]
    for account in (held, free):
        status = client.get("/both/status/me", headers=account.headers).json
        assert status["last_seen"] == isoformat(clock.now()), status


def test_favorite_changes_of_many_users_in_one_batch(app, make_user, events):
    listeners = [make_user(f"fav_listener_{n}") for n in range(2)]
    customers = [make_user(f"fav_customer_{n}", "customer") for n in range(2)]
    a, b = customers
    one, two = listeners
    with app.app_context():
        results = written(favorite_changes.write_changes, [
            (favorites.ADDED, a.id, one.id),
            (favorites.ADDED, b.id, one.id),
            (favorites.ADDED, a.id, two.id),
            (favorites.ADDED, a.id, a.id),  # refused alone: 400
            (favorites.ADDED, b.id, 999_999),  # refused alone: 404
            (favorites.REMOVED, b.id, two.id),  # nothing to remove: no event
        ])
    assert [(r[0].id, r[1]) if isinstance(r, tuple) else r.status for r in results] == [
        (one.id, True), (one.id, True), (two.id, True), 400, 404, (two.id, False)]
    assert [(e.type, e.subject_id, e.data["user_id"]) for e in events] == [
        ("favorite_added", one.id, a.id), ("favorite_added", one.id, b.id),
        ("favorite_added", two.id, a.id)]
    with app.app_context():
        # Stored for replay, with their ids, in the order they were made.
        assert [(e.id, e.data["user_id"]) for e in stored_events(one.id, 0)] == [
            (events[0].id, a.id), (events[1].id, b.id)]
        assert events[0].id < events[1].id < events[2].id
        versions = dict(db.session.execute(sa.select(User.id, User.favorites_version)
                                           .where(User.id.in_([a.id, b.id]))).all())
        assert versions == {a.id: 1, b.id: 1}


def test_a_favorite_changed_twice_in_a_batch_is_changed_in_turn(app, customer, listener,
                                                                  events):
    with app.app_context():
        results = written(favorite_changes.write_changes, [
            (favorites.ADDED, customer.id, listener.id),
            (favorites.REMOVED, customer.id, listener.id),
            (favorites.ADDED, customer.id, listener.id),
        ])
    assert [r[1] for r in results] == [True, True, True]
    assert [e.type for e in events] == ["favorite_added", "favorite_removed",
                                        "favorite_added"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Favorite)) == 1


def test_a_favorite_batch_of_a_gone_caller_is_refused_with_401(app, customer, listener):
    with app.app_context():
        db.session.get(User, customer.id).is_active = False
        db.session.commit()
        results = written(favorite_changes.write_changes, [
            (favorites.ADDED, customer.id, listener.id),
            (favorites.REMOVED, customer.id, listener.id)])
    assert [r.status for r in results] == [401, 401]


def test_an_account_a_favorite_batch_read_is_not_deleted_before_its_commit(
        app, customer, listener, monkeypatch):
    """PostgreSQL: the accounts are read FOR KEY SHARE, so a deletion between the read and
    the insert cannot make a foreign key error fail every change of the batch."""
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        pytest.skip("SQLite: the batch holds the write lock, no writer gets in between")
    real, tried = favorite_changes.checked, []

    def deleting_meanwhile(*args):
        with db.engine.connect() as other:
            other.exec_driver_sql("SET lock_timeout = '200ms'")
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                other.execute(sa.delete(User).where(User.id == listener.id))
            other.rollback()
        tried.append(True)
        return real(*args)

    monkeypatch.setattr(favorite_changes, "checked", deleting_meanwhile)
    with app.app_context():
        results = written(favorite_changes.write_changes,
                          [(favorites.ADDED, customer.id, listener.id)])
    assert tried == [True] and results[0][0].id == listener.id and results[0][1] is True


def test_a_failed_favorite_batch_stores_and_announces_nothing(app, customer, listener,
                                                             events, monkeypatch):
    def broken(connection, batch):
        raise sa.exc.OperationalError("INSERT", {}, Exception("disk full"))

    monkeypatch.setattr(favorite_changes, "store_events", broken)
    with app.app_context(), pytest.raises(sa.exc.OperationalError):
        Batcher(favorite_changes.write_changes).submit(
            (favorites.ADDED, customer.id, listener.id))
    assert events == []
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Favorite)) == 0
        assert stored_events(listener.id, 0) == []
