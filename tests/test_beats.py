"""Changes written together (domain.batches, heartbeats first): changes that arrive while
a batch is being written share the next statement and commit, each is answered only
after its batch committed, a failed write fails every change of its batch (none is
reported as recorded), and a change whose request gives up is never written later."""
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from saathii.clock import clock
from saathii.deadline import DeadlineExceeded
from saathii.domain import batches, beats
from saathii.domain.batches import Batcher
from saathii.errors import APIError
from saathii.events import Event, bus
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

    def __init__(self, fail=None, event=None):
        self.batches, self.release, self.fail = [], threading.Event(), fail
        self.event = event

    def __call__(self, user_ids, events):
        self.batches.append(list(user_ids))
        if len(self.batches) == 1:
            assert self.release.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        if self.event is not None:
            events.append(self.event)
        return [user_id % 2 == 0 for user_id in user_ids]  # "even ids online"


def submit_in_threads(batcher, user_ids):
    results = {}

    def run(user_id):
        try:
            results[user_id] = batcher.submit(user_id)
        except BaseException as err:  # noqa: BLE001 - recorded for the test
            results[user_id] = err

    threads = [threading.Thread(target=run, args=(user_id,)) for user_id in user_ids]
    for thread in threads:
        thread.start()
    return threads, results


def open_items(batcher):
    return None if batcher.open is None else batcher.open.items


def test_changes_arriving_during_a_write_share_the_next_statement():
    writer = GatedWriter()
    batcher = Batcher(writer)
    first, results = submit_in_threads(batcher, [2])
    until(lambda: writer.batches == [[2]])
    more, later = submit_in_threads(batcher, [3, 4, 6, 7])
    until(lambda: open_items(batcher) is not None and len(open_items(batcher)) == 4)
    assert results == {} and later == {}  # nobody is answered before their commit
    writer.release.set()
    for thread in first + more:
        thread.join(WAIT)
    assert writer.batches[0] == [2] and sorted(writer.batches[1]) == [3, 4, 6, 7]
    assert len(writer.batches) == 2
    assert results == {2: True} and later == {3: False, 4: True, 6: True, 7: False}
    until(lambda: not batcher.writing)
    assert batcher.open is None


def test_a_batch_gets_the_least_time_its_requests_have_left():
    """Each change is answered within its own request's deadline: the batch's deadline is
    the shortest time left among its changes, and one with almost none left is answered
    503 unwritten instead of holding the others to it."""
    batcher = Batcher(GatedWriter(), timeout=5)
    batch, now = batches.Batch(), time.monotonic()
    batch.items = [1, 2, 3, batches.WITHDRAWN, 4]
    batch.deadlines = [now + 3, now + 0.1, None, now + 1, now + 2]
    results = [None] * len(batch.items)
    live, seconds = batcher._in_time(batch, results)
    assert live == [0, 2, 4]
    assert isinstance(results[1], APIError) and results[1].status == 503
    assert results[0] is None and 1.5 < seconds <= 2
    assert batcher._in_time(batches.Batch(), []) == ([], 5)


def test_a_lone_change_is_written_at_once():
    writer = GatedWriter()
    writer.release.set()
    batcher = Batcher(writer)
    assert batcher.submit(4) is True and batcher.submit(5) is False
    assert writer.batches == [[4], [5]]


def test_a_failed_write_fails_every_change_of_its_batch_and_the_next_batch_still_runs():
    failure = OperationalError("UPDATE", {}, Exception("server closed the connection"))
    writer = GatedWriter(fail=failure)
    batcher = Batcher(writer)
    first, results = submit_in_threads(batcher, [2])
    until(lambda: len(writer.batches) == 1)
    more, later = submit_in_threads(batcher, [4, 6])
    until(lambda: open_items(batcher) is not None and len(open_items(batcher)) == 2)
    writer.release.set()
    for thread in first + more:
        thread.join(WAIT)
    # Each answered as a lone change would be (the error handlers make this one a 503),
    # by an exception of its own.
    outcomes = [results[2], later[4], later[6]]
    assert all(isinstance(outcome, OperationalError) and outcome.__cause__ is failure
               and outcome is not failure for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 3
    assert len(writer.batches) == 2
    writer.fail = None
    assert batcher.submit(8) is True  # the batcher is not stuck after a failure


class DeadlineBatch(batches.Batch):
    """A batch whose waiters give up once `passes(batch)` holds: their request's deadline
    passes (DeadlineExceeded), or, with `timed_out`, the batcher's own wait ends."""

    __slots__ = ()
    passes = staticmethod(lambda batch: True)
    timed_out = False
    made = []

    def __init__(self):
        super().__init__()
        self.done = DeadlineEvent(self)
        DeadlineBatch.made.append(self)


class DeadlineEvent(threading.Event):
    def __init__(self, batch):
        super().__init__()
        self.batch, self.fired = batch, set()

    def wait(self, timeout=None):
        me = threading.get_ident()
        if me not in self.fired:  # a request's deadline fires once
            until(lambda: DeadlineBatch.passes(self.batch))
            self.fired.add(me)
            if DeadlineBatch.timed_out:
                return False
            raise DeadlineExceeded("request")
        return super().wait(timeout)


@pytest.mark.parametrize("timed_out", [False, True], ids=["deadline", "wait"])
def test_a_change_that_gives_up_while_its_batch_is_open_is_never_written(monkeypatch,
                                                                         timed_out):
    """Answered 503 (by the error handler, for a deadline), so never written later."""
    writer = GatedWriter()
    batcher = Batcher(writer)
    first, results = submit_in_threads(batcher, [2])
    until(lambda: writer.batches == [[2]])  # a write that hangs
    monkeypatch.setattr(batches, "Batch", DeadlineBatch)
    monkeypatch.setattr(DeadlineBatch, "passes", staticmethod(lambda batch: True))
    monkeypatch.setattr(DeadlineBatch, "timed_out", timed_out)
    more, later = submit_in_threads(batcher, [4])
    for thread in more:
        thread.join(WAIT)
    if timed_out:
        assert isinstance(later[4], APIError) and later[4].status == 503
    else:
        assert isinstance(later[4], DeadlineExceeded)
    assert open_items(batcher) == [batches.WITHDRAWN]
    writer.release.set()
    for thread in first:
        thread.join(WAIT)
    until(lambda: not batcher.writing)
    assert results == {2: True} and writer.batches == [[2]]  # 4 is not written later
    monkeypatch.undo()
    assert batcher.submit(6) is True and writer.batches == [[2], [6]]


def test_a_change_whose_deadline_passes_while_its_batch_is_written_gets_the_truth(
        monkeypatch):
    """Its batch may commit: a 503 would deny a change that was made."""
    writer = GatedWriter()
    monkeypatch.setattr(batches, "Batch", DeadlineBatch)
    monkeypatch.setattr(DeadlineBatch, "passes", staticmethod(lambda batch: batch.taken))
    monkeypatch.setattr(DeadlineBatch, "made", [])
    batcher = Batcher(writer)
    first, results = submit_in_threads(batcher, [2])
    until(lambda: writer.batches == [[2]])
    until(lambda: DeadlineBatch.made[0].done.fired)  # its deadline has passed
    assert results == {}  # it waits on for the outcome
    writer.release.set()
    for thread in first:
        thread.join(WAIT)
    assert results == {2: True}


def test_an_event_that_fails_to_publish_leaves_the_committed_change_answered(
        app, monkeypatch, caplog):
    """The change committed: its request is answered, the next event is still
    published, the failure is logged, and the writer goes on."""
    first, second = (Event("listener_online", {}, subject_id=n) for n in (2, 4))

    def writer(user_ids, events):
        events.extend([first, second])
        return [True for _ in user_ids]

    published = []

    def publish(event):
        if event is first:
            raise RuntimeError("a subscriber failed")
        published.append(event)

    batcher = Batcher(writer)
    with app.app_context():
        monkeypatch.setattr(bus(), "publish", publish)
        assert batcher.submit(2) is True
        until(lambda: not batcher.writing)
        assert published == [second]
        assert "publishing a committed event failed" in caplog.text
        assert batcher.submit(4) is True  # answered once committed; published after
        until(lambda: not batcher.writing)
        assert published == [second, second]


def test_concurrent_heartbeats_are_recorded_in_one_batch(app, make_user, monkeypatch):
    users = [make_user(f"beater_{n}") for n in range(6)]
    for user in users:  # online first (their first beat brings them online, one by one)
        assert app.test_client().post("/both/status/heartbeat",
                                      headers=user.headers).status_code == 200
    clock.advance(30)
    gate, written = threading.Event(), []
    real = beats.write_beats

    def gated(user_ids, events):
        written.append(sorted(user_ids))
        if len(written) == 1:
            assert gate.wait(WAIT)
        return real(user_ids, events)

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
        until(lambda: open_items(beats.batcher()) is not None
              and len(open_items(beats.batcher())) == 5)
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

    def writer(user_ids, events):
        calls.append(list(user_ids))
        if len(calls) == 1:
            raise OperationalError("UPDATE", {}, Deadlocked("deadlock detected"))
        return [True for _ in user_ids]

    assert Batcher(writer).submit(4) is True
    assert calls == [[4], [4]]


def test_a_batch_that_fails_otherwise_is_not_written_again():
    calls = []

    def writer(user_ids, events):
        calls.append(list(user_ids))
        raise OperationalError("UPDATE", {}, Exception("server closed the connection"))

    with pytest.raises(OperationalError):
        Batcher(writer).submit(4)
    assert len(calls) == 1


def test_a_writer_that_cannot_start_leaves_no_batcher_stuck(monkeypatch):
    def no_thread(target, name):
        raise RuntimeError("can't start new thread")

    writer = GatedWriter()
    writer.release.set()
    batcher = Batcher(writer)
    monkeypatch.setattr(batches, "light_thread", no_thread)
    with pytest.raises(RuntimeError):
        batcher.submit(2)
    assert not batcher.writing and batcher.open is None
    monkeypatch.undo()
    assert batcher.submit(4) is True and writer.batches == [[4]]
