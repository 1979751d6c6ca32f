"""Two gunicorn processes (the Procfile's settings) sharing the database and Redis:
events cross between them, and arrive exactly once."""
import time

from .processes import rest
from .sockets import FeedClient

SETTLE_SECONDS = 0.5  # time for a duplicate, if any, to arrive through Redis


def open_feed(base, account):
    client = FeedClient(base, account.token)
    assert client.receive(timeout=10)["type"] == "connection_established"
    return client


def test_events_cross_processes_exactly_once(web_process, customer, listener, make_user):
    stranger = make_user("priya_s", "customer")
    server_a, server_b = web_process(), web_process()
    listener_on_a, listener_on_b = open_feed(server_a, listener), open_feed(server_b, listener)
    fan_on_b, stranger_on_a = open_feed(server_b, customer), open_feed(server_a, stranger)
    try:
        # A favorite added through B reaches the listener's sockets on A and on B.
        status, body = rest(server_b, "POST", "/favorites/add", customer,
                            {"listener_id": listener.id})
        assert (status, body["is_favorited"]) == (200, True)
        for socket in (listener_on_a, listener_on_b):
            event = socket.receive(timeout=10)
            assert (event["type"], event["data"]["user_id"]) == ("favorite_added", customer.id)
        # Presence changed through A reaches the fan on B (who now watches the listener).
        status, _ = rest(server_a, "POST", "/both/status/heartbeat", listener)
        assert status == 200
        online = fan_on_b.receive(timeout=10)
        assert (online["type"], online["data"]["user_id"]) == ("listener_online", listener.id)
        for socket in (listener_on_a, listener_on_b):
            assert socket.receive(timeout=10)["type"] == "listener_online"
        time.sleep(SETTLE_SECONDS)
        for socket in (listener_on_a, listener_on_b, fan_on_b, stranger_on_a):
            socket.expect_nothing_queued()
    finally:
        for socket in (listener_on_a, listener_on_b, fan_on_b, stranger_on_a):
            socket.close()


def test_replay_across_processes(web_process, customer, listener):
    server_a, server_b = web_process(), web_process()
    status, _ = rest(server_a, "POST", "/favorites/add", customer, {"listener_id": listener.id})
    assert status == 200
    client = FeedClient(server_b, listener.token, since=0)
    try:
        assert client.receive(timeout=10)["type"] == "connection_established"
        replayed = client.receive(timeout=10)
        assert (replayed["type"], replayed["data"]["username"]) == ("favorite_added", "john_doe")
        client.expect_nothing_queued()
    finally:
        client.close()


def test_lapsed_users_are_swept_once_by_many_schedulers(
        web_process, start_process, customer, make_user, redis_url):
    """Two web processes of two workers each, every worker running the scheduler, plus a
    clock process: each lapsed user is taken offline once, with one event."""
    settings = {"SCHEDULER_ENABLED": "true", "SWEEP_INTERVAL_SECONDS": 1,
                "PRESENCE_TIMEOUT_SECONDS": 2}
    listeners = [make_user(f"listener_{n}", "listener") for n in range(12)]
    server_a = web_process(workers=2, **settings)
    server_b = web_process(workers=2, **settings)
    start_process(["saathii.scheduler"], REDIS_URL=redis_url, **settings,
                  REDIS_CHANNEL=web_process.channel)
    watcher = open_feed(server_a, customer)
    try:
        watcher.send({"type": "subscribe", "subscription": "feed"})
        assert watcher.receive(timeout=10)["type"] == "subscription_confirmed"
        for account in listeners:
            assert rest(server_b, "POST", "/both/status/heartbeat", account)[0] == 200
        seen = []
        while sum(1 for kind, _ in seen if kind == "listener_offline") < len(listeners):
            event = watcher.receive(timeout=20)
            seen.append((event["type"], event["data"]["user_id"]))
        time.sleep(3)  # three more sweep intervals: a duplicate would show up by now
        watcher.expect_nothing_queued()
    finally:
        watcher.close()
    ids = sorted(account.id for account in listeners)
    assert sorted(uid for kind, uid in seen if kind == "listener_online") == ids
    assert sorted(uid for kind, uid in seen if kind == "listener_offline") == ids
    for account in listeners:
        status, body = rest(server_a, "GET", "/both/status/me", account)
        assert (status, body["is_online"]) == (200, False)
