"""A database or a Redis that stalls (holds every byte instead of refusing), or goes
away, between the service and it: a TCP proxy the test controls (tests/proxy.py). Requests
get a 503 with Retry-After within their deadline instead of hanging, Redis costs them
nothing, and everything recovers by itself once the proxy heals."""
import http.client
import json
import threading
import time

import pytest
from sqlalchemy.engine import make_url

from .processes import rest
from .proxy import TcpProxy
from .test_feed import upgrade
from .test_multiprocess import open_feed

UNAVAILABLE = {"detail": "Service temporarily unavailable, try again shortly"}
UNKNOWN = {"detail": "The change may or may not have been saved; read it back, or send it "
                     "again"}


@pytest.fixture
def postgres_proxy(config):
    """A proxy in front of the test database (PostgreSQL only); yields (proxy, url)."""
    url = make_url(config.SQLALCHEMY_DATABASE_URI)
    if url.get_backend_name() != "postgresql":
        pytest.skip("the test database is not PostgreSQL")
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxied = url.set(drivername="postgresql", host="127.0.0.1", port=proxy.port)
    yield proxy, proxied.render_as_string(hide_password=False)
    proxy.close()


@pytest.fixture
def redis_proxy(redis_url):
    url = make_url(redis_url.replace("redis://", "redis+x://"))
    proxy = TcpProxy(url.host, url.port or 6379)
    yield proxy, f"redis://127.0.0.1:{proxy.port}/{url.database or 0}"
    proxy.close()


def call(base, method, path, account, body=None):
    """(status, JSON body, Retry-After) of a request that may wait at most 20 s."""
    connection = http.client.HTTPConnection(base, timeout=20)
    headers = {"Authorization": f"Bearer {account.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request(method, path, body=json.dumps(body) if body is not None else None,
                       headers=headers)
    response = connection.getresponse()
    result = response.status, json.loads(response.read()), response.getheader("Retry-After")
    connection.close()
    return result


def each_path(customer, listener):
    """One request of every kind that needs the database."""
    return [
        ("POST", "/favorites/add", customer, {"listener_id": listener.id}),
        ("DELETE", "/favorites/remove", customer, {"listener_id": listener.id}),
        ("GET", "/favorites", customer, None),
        ("GET", f"/users/{listener.id}/presence", customer, None),
        ("GET", f"/users/presence?user_ids={listener.id}", customer, None),
        ("PUT", "/both/status/me", listener, {"is_online": True}),
        ("POST", "/both/status/heartbeat", listener, None),
    ]


def in_parallel(requests, stagger=0):
    """Send the requests at once (or `stagger` seconds apart); their results in order."""
    results = [None] * len(requests)

    def run(index, args):
        results[index] = call(*args)

    threads = [threading.Thread(target=run, args=(index, (server, *request)))
               for index, (server, *request) in enumerate(requests)]
    for thread in threads:
        thread.start()
        time.sleep(stagger)
    for thread in threads:
        thread.join(30)
    return results


def until_ok(server, account, timeout=60):
    """Call until the service answers 200 again (it recovers by itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = call(server, "GET", "/both/status/me", account)
        if status == 200:
            return body
        time.sleep(0.5)
    raise AssertionError("the service did not recover")


@pytest.mark.parametrize("outage", ["stall", "cut"])
def test_a_database_that_stalls_or_goes_gets_503_then_recovers(
        web_process, postgres_proxy, customer, listener, tmp_path, outage):
    proxy, url = postgres_proxy
    server = web_process(relay=None, DATABASE_URL=url, REQUEST_TIMEOUT_SECONDS=2)
    requests = each_path(customer, listener)
    for method, path, account, body in requests:  # warm: every path works
        assert call(server, method, path, account, body)[0] == 200
    proxy.pause() if outage == "stall" else proxy.cut()
    results = in_parallel([(server, *request) for request in requests])
    assert results[:-1] == [(503, UNAVAILABLE, "5")] * (len(requests) - 1), results
    # On PostgreSQL an online user's heartbeat is one statement that is its own commit:
    # cut short, it may have been written, and the answer says so.
    assert results[-1] in ((503, UNAVAILABLE, "5"), (503, UNKNOWN, "5")), results
    status, body = upgrade(server, f"/ws/feed?token={customer.token}")  # a new socket
    assert (status, json.loads(body)) == (503, UNAVAILABLE)
    proxy.heal()
    assert until_ok(server, listener)["is_online"] is True
    for method, path, account, body in requests:
        assert call(server, method, path, account, body)[0] == 200
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert "Traceback" not in logs


def test_no_change_waits_past_its_deadline_in_a_stall(web_process, postgres_proxy, make_user):
    """A change that joins a batch while the writer is held by a stalled database is
    answered within its own deadline (2 s here), not the writer's next one after it."""
    proxy, url = postgres_proxy
    server = web_process(relay=None, DATABASE_URL=url, REQUEST_TIMEOUT_SECONDS=2)
    listeners = [make_user(f"stalled_{n}", "listener") for n in range(4)]
    for listener in listeners:  # warm: the path works
        assert call(server, "PUT", "/both/status/me", listener, {"is_online": True})[0] == 200
    proxy.pause()
    took = {}

    def change(listener):
        started = time.monotonic()
        took[listener.id] = (call(server, "PUT", "/both/status/me", listener,
                                  {"is_busy": True}), time.monotonic() - started)
    threads = [threading.Thread(target=change, args=(listener,)) for listener in listeners]
    for thread in threads:  # the first holds the writer; the others join the next batch
        thread.start()
        time.sleep(0.4)
    for thread in threads:
        thread.join(30)
    proxy.heal()
    assert [result for result, _ in took.values()] == [(503, UNAVAILABLE, "5")] * 4
    assert max(seconds for _, seconds in took.values()) < 2 + 0.9, took


def test_a_socket_over_its_open_limit_in_a_stall_gets_503(web_process, postgres_proxy,
                                                          customer):
    """The refusal's account check (401 before 429) meets a stalled database within the
    request's time, as the greeting does: 503, not a hang."""
    proxy, url = postgres_proxy
    server = web_process(relay=None, DATABASE_URL=url, REQUEST_TIMEOUT_SECONDS=2,
                         RATELIMIT_ENABLED="true", RATELIMIT_FEED_CONNECTS="1 per minute")
    open_feed(server, customer).close()
    proxy.pause()
    status, body = upgrade(server, f"/ws/feed?token={customer.token}")
    assert (status, json.loads(body)) == (503, UNAVAILABLE)
    proxy.heal()
    status, body = upgrade(server, f"/ws/feed?token={customer.token}")
    assert (status, json.loads(body)) == (429, {"detail": "Too many requests"})


def test_a_socket_opened_in_a_stall_with_socket_presence_is_a_departure(
        web_process, postgres_proxy, customer, listener, tmp_path):
    """With presence from sockets, an opening socket beats before its greeting: in a
    stall it gets 503 (not the beat's "may or may not have been saved"), and the socket
    that never opened counts as one that closed (hub.given_up): its user, online by a
    REST heartbeat before it and by nothing since, goes offline after the grace rather
    than at the heartbeat timeout."""
    proxy, url = postgres_proxy
    server = web_process(relay=None, DATABASE_URL=url, REQUEST_TIMEOUT_SECONDS=2,
                         PRESENCE_FROM_SOCKETS="true", OFFLINE_GRACE_SECONDS=1,
                         SOCKET_PRESENCE_TICK_SECONDS=0.2)
    assert call(server, "POST", "/both/status/heartbeat", customer)[0] == 200
    assert call(server, "GET", "/both/status/me", customer)[1]["is_online"] is True
    proxy.pause()
    status, body = upgrade(server, f"/ws/feed?token={customer.token}")
    assert (status, json.loads(body)) == (503, UNAVAILABLE)
    proxy.heal()
    until_ok(server, listener)
    deadline = time.monotonic() + 10  # the grace and a few ticks; the timeout is 120 s
    while call(server, "GET", "/both/status/me", customer)[1]["is_online"]:
        assert time.monotonic() < deadline, "the failed open was not a departure"
        time.sleep(0.2)
    feed = open_feed(server, customer)  # healed: a socket opens and keeps its user online
    try:
        assert call(server, "GET", "/both/status/me", customer)[1]["is_online"] is True
    finally:
        feed.close()
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert "Traceback" not in logs


@pytest.mark.parametrize("heal", ["after", "during"])
def test_every_change_answered_in_a_stall_is_answered_truly(
        web_process, postgres_proxy, make_user, tmp_path, heal):
    """Changes that wait in a batch while the database stalls, some in the batch being
    written, some in the one that forms behind it: each answered 200 was made, each
    answered 503 was not, and none is written later (a withdrawn change stays out).
    Healed after every answer: all are 503. Healed while they wait: either, truly."""
    proxy, url = postgres_proxy
    server = web_process(relay=None, DATABASE_URL=url, REQUEST_TIMEOUT_SECONDS=1)
    online = [make_user(f"stall_online_{n}") for n in range(4)]
    offline = [make_user(f"stall_offline_{n}") for n in range(4)]
    customers = [make_user(f"stall_customer_{n}", "customer") for n in range(4)]
    for account in online:
        assert call(server, "POST", "/both/status/heartbeat", account)[0] == 200
    changes = ([(server, "PUT", "/both/status/me", account, {"is_busy": True})
                for account in online]
               + [(server, "POST", "/both/status/heartbeat", account, None)
                  for account in offline]
               + [(server, "POST", "/favorites/add", account, {"listener_id": online[0].id})
                  for account in customers])
    proxy.pause()
    if heal == "during":
        threading.Timer(1.5, proxy.heal).start()
    results = in_parallel(changes, stagger=0.15)
    beats = range(len(online), len(online) + len(offline))
    if heal == "after":
        # A heartbeat's first statement is its own commit (PostgreSQL): cut short, the
        # answer says its outcome is unknown.
        assert all(result == (503, UNAVAILABLE, "5")
                   or index in beats and result == (503, UNKNOWN, "5")
                   for index, result in enumerate(results)), results
        proxy.heal()
    assert {status for status, _, _ in results} <= {200, 503}, results
    until_ok(server, online[0])
    late = make_user("stall_late")  # a change after the stall: it writes its own batch
    assert call(server, "POST", "/both/status/heartbeat", late)[0] == 200
    made = [call(server, "GET", "/both/status/me", account)[1]["is_busy"]
            for account in online]
    made += [call(server, "GET", "/both/status/me", account)[1]["is_online"]
             for account in offline]
    made += [call(server, "GET", "/favorites", account)[1]["total_count"] == 1
             for account in customers]
    truly = [None if body == UNKNOWN else status == 200 for status, body, _ in results]
    assert [None if said is None else state for said, state in zip(truly, made)] == truly, \
        results
    assert call(server, "GET", "/both/status/me", late)[1]["is_online"] is True
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert "Traceback" not in logs


def test_a_stalled_redis_costs_requests_nothing(web_process, redis_proxy, customer,
                                                listener, tmp_path):
    proxy, url = redis_proxy
    limits = {"RATELIMIT_ENABLED": "true", "RATELIMIT_HEARTBEAT": "1000 per minute",
              "RATELIMIT_PRESENCE_LOOKUPS": "1000 per minute"}
    server_a = web_process(REDIS_URL=url, **limits)
    server_b = web_process(REDIS_URL=url, **limits)
    on_b = open_feed(server_b, listener)
    try:
        status, _ = rest(server_a, "POST", "/favorites/add", customer,
                         {"listener_id": listener.id})
        assert status == 200
        assert on_b.receive(timeout=10)["type"] == "favorite_added"
        proxy.pause()
        for _ in range(10):  # rate-limited and publishing paths all answer
            for method, path, account, body in each_path(customer, listener):
                status, _, _ = call(server_a, method, path, account, body)
                assert status == 200, (method, path)
        proxy.heal()
        deadline = time.monotonic() + 40
        while True:  # events cross processes again once Redis answers
            assert time.monotonic() < deadline, "no event crossed processes after the stall"
            for method, path in (("POST", "/favorites/add"), ("DELETE", "/favorites/remove")):
                assert rest(server_a, method, path, customer,
                            {"listener_id": listener.id})[0] == 200
            message = on_b.ws.receive(timeout=1)
            if message is not None and json.loads(message)["type"].startswith("favorite_"):
                break
    finally:
        on_b.close()
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert "Traceback" not in logs
