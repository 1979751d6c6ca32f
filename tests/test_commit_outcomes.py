"""A COMMIT cut short (a deadline, a lost connection) is settled from PostgreSQL's record
of the transaction (saathii/commits.py): a change that committed is answered 200 and its
events published; one that did not, 503 and nothing; one whose outcome cannot be read,
a 503 that says so. PostgreSQL only (SQLite's commit is a local call)."""
import pytest
import sqlalchemy as sa

from saathii import commits
from saathii.deadline import DeadlineExceeded
from saathii.domain import sweeper
from saathii.clock import clock
from saathii.extensions import db
from saathii.models import UserStatus

UNKNOWN = {"detail": "The change may or may not have been saved; read it back, or send it "
                     "again"}
UNAVAILABLE = {"detail": "Service temporarily unavailable, try again shortly"}


@pytest.fixture(autouse=True)
def postgresql_only(config):
    if not config.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
        pytest.skip("settling a commit: PostgreSQL only (TEST_DATABASE_URL)")


@pytest.fixture
def cut_commit(app, monkeypatch):
    """Make the next COMMIT be cut short, as a deadline or a lost connection does in the
    database driver's commit: after it went through (True) or before it was sent (False)."""
    with app.app_context():
        dialect = type(db.engine.dialect)

    def cut(went_through):
        real, cut.done = dialect.do_commit, False

        def do_commit(self, dbapi_connection):
            if cut.done:
                return real(self, dbapi_connection)
            cut.done = True
            if went_through:
                real(self, dbapi_connection)
            raise DeadlineExceeded("batch")
        monkeypatch.setattr(dialect, "do_commit", do_commit)
    return cut


def busy_of(app, user_id):
    with app.app_context():
        busy = db.session.scalar(sa.select(UserStatus.is_busy)
                                 .where(UserStatus.user_id == user_id))
        db.session.remove()
    return busy


def go_busy(client, listener):
    return client.put("/both/status/me", headers=listener.headers,
                      json={"is_online": True, "is_busy": True})


def test_a_commit_cut_after_it_went_through_is_answered_saved(
        app, client, listener, events, cut_commit):
    cut_commit(went_through=True)
    response = go_busy(client, listener)
    assert response.status_code == 200, response.json
    assert response.json["is_busy"] is True
    assert busy_of(app, listener.id) is True
    assert [event.type for event in events] == ["listener_busy"]


def test_a_commit_cut_before_it_was_sent_is_answered_unsaved(
        app, client, listener, events, cut_commit):
    cut_commit(went_through=False)
    response = go_busy(client, listener)
    assert (response.status_code, response.json) == (503, UNAVAILABLE)
    assert busy_of(app, listener.id) is False
    assert events == []
    # Nothing is left behind: the next change goes through.
    response = go_busy(client, listener)
    assert (response.status_code, response.json["is_busy"]) == (200, True)


def test_an_outcome_that_cannot_be_read_is_answered_as_unknown(
        app, client, listener, events, cut_commit, monkeypatch):
    cut_commit(went_through=True)
    monkeypatch.setattr(commits, "STATUS", sa.text("SELECT 'in progress'"))
    monkeypatch.setattr(commits, "TERMINATE", sa.text("SELECT :pid, :xid"))
    monkeypatch.setattr(commits, "SETTLE_SECONDS", 0.2)
    response = go_busy(client, listener)
    assert (response.status_code, response.json) == (503, UNKNOWN)
    assert response.headers["Retry-After"] == "5"


def test_a_sweep_whose_commit_was_cut_after_it_went_through_publishes_its_events(
        app, listener, events, cut_commit):
    with app.app_context():
        status = db.session.get(UserStatus, listener.id)
        status.is_online, status.last_seen = True, clock.now()
        db.session.commit()
        clock.advance(3600)
        cut_commit(went_through=True)
        try:  # settled as committed: it counts the change, and announces it once
            assert sweeper.take_lapsed_offline(clock.now(), 120) == 1
        finally:
            clock.reset()
        db.session.remove()
    assert [event.type for event in events] == ["listener_offline"]
    with app.app_context():
        assert db.session.get(UserStatus, listener.id).is_online is False
