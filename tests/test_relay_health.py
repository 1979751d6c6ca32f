"""A relay's health as heard through itself (saathii/realtime/probe.py): a probe not back
in time marks it down, once; the first probe back after that marks it up and asks the
process to resync from when it was last known good."""
import pytest

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
