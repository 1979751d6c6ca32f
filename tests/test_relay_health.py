"""A relay's health as heard through itself (saathii/realtime/probe.py): a probe not back
in time marks it down, once; the first probe back after that marks it up and asks the
process to resync from when it was last known good."""
import threading
import time

import pytest

from config import Config
from saathii.realtime.hub import Connection
from saathii.realtime.probe import RelayHealth, RelayStalled


class Moments:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def health():
    moments = Moments()
    recovered = []
    found = RelayHealth("Test", send=lambda token: None, interval=1, stall_after=3,
                        monotonic=moments)
    found.recover = recovered.append  # record instead of starting a resync thread
    found.moments, found.recovered_since = moments, recovered
    return found


def test_up_only_once_a_probe_comes_back(health):
    health.listening()
    assert not health.connected
    token = health.probe()
    health.heard(token)
    assert health.connected
    assert health.recovered_since == []  # the first time up is no recovery


def test_a_probe_not_back_in_time_marks_it_down_once_and_the_next_back_recovers(health, caplog):
    health.listening()
    health.heard(health.probe())
    good_until = health.good_until
    health.probe()
    health.moments.now += 2.9
    health.check()  # within stall_after: still up
    health.moments.now += 0.2
    with pytest.raises(RelayStalled):
        health.check()
    health.lost("stalled")
    health.lost("connection refused")  # reconnecting fails too: said once
    assert not health.connected
    assert caplog.text.count("Test relay is down") == 1
    health.listening()
    stale = health.probe()
    health.listening()  # reconnected again: probes from before are not counted
    health.heard(stale)
    assert not health.connected and health.recovered_since == []
    health.heard(health.probe())
    assert health.connected
    assert health.recovered_since == [good_until]
    assert "Test relay carries events again after" in caplog.text


def test_a_later_probe_back_clears_the_earlier_ones(health):
    health.listening()
    first, second = health.probe(), health.probe()
    health.heard(second)
    health.moments.now += 10
    health.check()  # the first was overtaken: not counted as lost
    assert health.connected and first not in health.outstanding


def test_a_probe_lost_while_up_asks_for_a_resync(health):
    health.listening()
    health.heard(health.probe())
    good_until = health.good_until
    health.probe()  # lost on the way (a connection reset and silently renewed)
    health.heard(health.probe())
    assert health.connected
    assert health.recovered_since == [good_until]


def test_resyncs_run_one_at_a_time_and_again_from_the_earliest_time_asked():
    running, release, calls = threading.Event(), threading.Event(), []

    def recovered(since):
        calls.append(since)
        running.set()
        release.wait(5)

    health = RelayHealth("Test", send=lambda token: None, interval=1, stall_after=3,
                         recovered=recovered)
    health.recover(30)
    assert running.wait(5)
    health.recover(20)
    health.recover(10)
    health.recover(15)
    release.set()
    deadline = time.monotonic() + 5
    while health.resyncing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [30, 10] and not health.resyncing


def test_a_restated_presence_is_sent_only_when_its_state_differs():
    connection = Connection(None, 1, Config.FEED_MAX_QUEUED)
    online = (True, False, None)
    connection.deliver({"n": 1}, presence_of=7, version=3, state=online)
    connection.pending.clear()
    # A resync restating the same state at a newer version (heartbeats moved it): nothing.
    connection.deliver({"n": 2}, presence_of=7, version=5, state=online, restated=True)
    assert connection.queued() == 0
    connection.deliver({"n": 3}, presence_of=7, version=4, state=(True, True, None))
    assert connection.queued() == 0  # older than the version it knows
    connection.deliver({"n": 4}, presence_of=7, version=6, state=(True, True, None),
                       restated=True)
    assert [envelope for envelope, _ in connection.pending.values()] == [{"n": 4}]
