"""Heartbeats written together: beats that arrive while a batch is being written share
the next statement and commit, each is answered only after its batch committed, and a
failed write fails every beat of its batch (none is reported as recorded)."""
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from saathii.clock import clock
from saathii.domain import beats
from saathii.domain.beats import BeatBatcher
from saathii.errors import APIError
from saathii.extensions import db
from saathii.models import User

WAIT = 10  # seconds: only a broken batcher ever waits this long


def until(condition):
    """Wait until condition() holds (threads are involved, the clock is not)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


class GatedWriter:
    """A write function that records its batches and holds the first until released."""

    def __init__(self, fail=None):
        self.batches, self.release, self.fail = [], threading.Event(), fail

    def __call__(self, user_ids):
        self.batches.append(list(user_ids))
        if len(self.batches) == 1:
            assert self.release.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        return [user_id for user_id in user_ids if user_id % 2 == 0]  # "even ids online"


def beat_in_threads(batcher, user_ids):
    results = {}

    def run(user_id):
        try:
            results[user_id] = batcher.beat(user_id)
        except Exception as err:  # noqa: BLE001 - recorded for the test
            results[user_id] = err

    threads = [threading.Thread(target=run, args=(user_id,)) for user_id in user_ids]
    for thread in threads:
        thread.start()
    return threads, results


def test_beats_arriving_during_a_write_share_the_next_statement():
    writer = GatedWriter()
    batcher = BeatBatcher(writer)
    first, results = beat_in_threads(batcher, [2])
    until(lambda: writer.batches == [[2]])
    more, later = beat_in_threads(batcher, [3, 4, 6, 7])
    until(lambda: batcher.open is not None and len(batcher.open.user_ids) == 4)
    assert results == {} and later == {}  # nobody is answered before their commit
    writer.release.set()
    for thread in first + more:
        thread.join(WAIT)
    assert writer.batches[0] == [2] and sorted(writer.batches[1]) == [3, 4, 6, 7]
    assert len(writer.batches) == 2
    assert results == {2: True} and later == {3: False, 4: True, 6: True, 7: False}
    assert batcher.open is None and not batcher.writing.locked()


def test_a_lone_beat_is_written_at_once():
    writer = GatedWriter()
    writer.release.set()
    batcher = BeatBatcher(writer)
    assert batcher.beat(4) is True and batcher.beat(5) is False
    assert writer.batches == [[4], [5]]


def test_a_failed_write_fails_every_beat_of_its_batch_and_the_next_batch_still_runs():
    failure = OperationalError("UPDATE", {}, Exception("server closed the connection"))
    writer = GatedWriter(fail=failure)
    batcher = BeatBatcher(writer)
    first, results = beat_in_threads(batcher, [2])
    until(lambda: len(writer.batches) == 1)
    more, later = beat_in_threads(batcher, [4, 6])
    until(lambda: batcher.open is not None and len(batcher.open.user_ids) == 2)
    writer.release.set()
    for thread in first + more:
        thread.join(WAIT)
    assert results[2] is failure  # the beat that wrote gets the error as it is
    # Of the second batch, one beat wrote it (and got the error as it is); the other
    # gets a 503 of its own, caused by it.
    wrote, waited = sorted([later[4], later[6]], key=lambda outcome: outcome is not failure)
    assert wrote is failure
    assert isinstance(waited, APIError) and waited.status == 503
    assert waited.__cause__ is failure
    assert len(writer.batches) == 2 and not batcher.writing.locked()
    writer.fail = None
    assert batcher.beat(8) is True  # the batcher is not stuck after a failure


def test_a_beat_that_gives_up_waiting_leaves_its_batch_to_the_next_beat(monkeypatch):
    monkeypatch.setattr(beats, "WAIT_SECONDS", 0.2)
    writer = GatedWriter()
    batcher = BeatBatcher(writer)
    first, results = beat_in_threads(batcher, [2])
    until(lambda: writer.batches == [[2]])  # a write that hangs
    with pytest.raises(APIError) as gave_up:
        batcher.beat(4)
    assert gave_up.value.status == 503
    assert batcher.open is not None and batcher.open.user_ids == [4]
    writer.release.set()
    for thread in first:
        thread.join(WAIT)
    assert results == {2: True}
    assert batcher.beat(6) is True  # writes the batch the beat of 4 left behind
    assert writer.batches == [[2], [4, 6]]
    assert batcher.open is None and not batcher.writing.locked()


def test_concurrent_heartbeats_are_recorded_in_one_batch(app, make_user, monkeypatch):
    users = [make_user(f"beater_{n}") for n in range(6)]
    for user in users:  # online first (their first beat brings them online, one by one)
        assert app.test_client().post("/both/status/heartbeat",
                                      headers=user.headers).status_code == 200
    clock.advance(30)
    gate, written = threading.Event(), []
    real = beats.write_beats

    def gated(user_ids):
        written.append(sorted(user_ids))
        if len(written) == 1:
            assert gate.wait(WAIT)
        return real(user_ids)

    with app.app_context():
        monkeypatch.setattr(beats.batcher(), "write", gated)
    answers = {}

    def beat(user):
        response = app.test_client().post("/both/status/heartbeat", headers=user.headers)
        answers[user.id] = (response.status_code, response.json)

    threads = [threading.Thread(target=beat, args=(user,)) for user in users]
    threads[0].start()
    until(lambda: len(written) == 1)
    for thread in threads[1:]:
        thread.start()
    with app.app_context():
        until(lambda: beats.batcher().open is not None
              and len(beats.batcher().open.user_ids) == 5)
    gate.set()
    for thread in threads:
        thread.join(WAIT)
    assert written == [[users[0].id], sorted(user.id for user in users[1:])]
    assert all(answer == (200, {"message": "Heartbeat received"})
               for answer in answers.values()) and len(answers) == 6
    client = app.test_client()
    for user in users:
        mine = client.get("/both/status/me", headers=user.headers).json
        assert mine["is_online"] is True
        assert mine["last_seen"] == clock.now().isoformat(timespec="milliseconds")[:23] + "Z"


@pytest.mark.parametrize("path", ["/both/status/heartbeat", "/users/me/heartbeat"])
def test_a_deactivated_users_beat_is_refused(app, client, listener, path):
    assert client.post(path, headers=listener.headers).status_code == 200
    with app.app_context():
        db.session.get(User, listener.id).is_active = False
        db.session.commit()
    response = client.post(path, headers=listener.headers)
    assert response.status_code == 401
    assert response.json == {"detail": "Invalid or expired token"}


class Deadlocked(Exception):
    """What psycopg raises for a transaction PostgreSQL aborted to break a deadlock."""

    sqlstate = "40P01"


def test_a_batch_chosen_as_a_deadlocks_victim_is_written_again():
    calls = []

    def writer(user_ids):
        calls.append(list(user_ids))
        if len(calls) == 1:
            raise OperationalError("UPDATE", {}, Deadlocked("deadlock detected"))
        return user_ids

    batcher = BeatBatcher(writer)
    assert batcher.beat(4) is True
    assert calls == [[4], [4]]


def test_a_batch_that_fails_otherwise_is_not_written_again():
    calls = []

    def writer(user_ids):
        calls.append(list(user_ids))
        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    with pytest.raises(OperationalError):
        BeatBatcher(writer).beat(4)
    assert len(calls) == 1
