"""saathii/realtime/inbox.py swaps two attributes of simple-websocket's socket (no public
hook counts inbound messages or ping frames): these fail loudly if an upgrade moves them,
before a flood could pass unbounded."""
import inspect
from importlib.metadata import version

import simple_websocket
from simple_websocket.ws import Base
from wsproto import WSConnection
from wsproto.events import Ping

from saathii.realtime.inbox import CountedFrames, Inbox


def test_simple_websocket_still_has_what_the_inbox_replaces():
    where = f"simple-websocket {version('simple-websocket')}"
    reader = inspect.getsource(Base._handle_events) + inspect.getsource(Base._thread)
    for used, why in (("self.input_buffer.append(", "messages go through Inbox.append"),
                      ("self.ws.events()", "frames come through CountedFrames.events"),
                      ("self.ws.receive_data(", "the reader feeds its wsproto connection"),
                      ("self.ws.send(", "the reader answers through it")):
        assert used in reader, f"{where}: the reader no longer says {used!r} ({why}); " \
                               "saathii/realtime/inbox.py must follow it"
    assert "self.ws = WSConnection(" in inspect.getsource(Base.__init__), \
        f"{where}: Base.__init__ no longer makes self.ws; saathii/realtime/inbox.py must follow"
    assert simple_websocket.Server.__mro__[1] is Base, f"{where}: Server is not a Base now"


def test_ping_frames_spend_the_budget_and_past_it_are_dropped():
    floods = []
    inbox = Inbox(rate=0.001, burst=3, on_flood=floods.append)

    class Frames:
        def events(self):
            yield from [Ping(b"1"), Ping(b"2"), Ping(b"3"), Ping(b"4"), Ping(b"5")]

    passed = list(CountedFrames(Frames(), inbox).events())
    assert [bytes(ping.payload) for ping in passed] == [b"1", b"2", b"3"]
    assert floods == ["Too many messages"]  # said once
    inbox.append("a message")  # flooded: dropped quietly
    assert list(inbox) == [] and floods == ["Too many messages"]


def test_counted_frames_pass_everything_else_through():
    connection = WSConnection(simple_websocket.ws.ConnectionType.SERVER)
    frames = CountedFrames(connection, Inbox(1, 1, lambda reason: None))
    assert frames.state is connection.state
