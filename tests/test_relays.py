"""The Procfile's web command as deployed, with nothing set but the database and the
secret (and REDIS_URL for the Redis relay): every socket gets every event it should,
exactly once, whichever worker served the request and whichever holds the socket.

On SQLite alone that is one worker; on PostgreSQL events cross workers through
LISTEN/NOTIFY, or through Redis when REDIS_URL is set."""
import http.client
import threading
import time

import pytest
import sqlalchemy as sa

from saathii.events import PRESENCE_TYPES
from saathii.extensions import db

from .processes import read_logs_until, rest
from .sockets import FeedClient
from .workers import serving_pid, worker_pids

SETTLE_SECONDS = 0.5  # time for a duplicate, if any, to arrive through a relay
ATTEMPTS = 60  # connections opened, at most, until each worker holds one
WEB = ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
RELAYS = pytest.mark.parametrize("relay", [None, "redis"], ids=["no-redis", "redis"])


def is_sqlite(config):
    return config.SQLALCHEMY_DATABASE_URI.startswith("sqlite")


def needs_postgresql(config):
    if is_sqlite(config):
        pytest.skip("LISTEN/NOTIFY: PostgreSQL only (TEST_DATABASE_URL)")


def start_web(web_process, config, relay, **env):
    """The Procfile's web command with its default worker count; (base, worker pids).
    A user may hold as many sockets as the tests open to reach every worker."""
    env.setdefault("FEED_MAX_SOCKETS_PER_USER", ATTEMPTS)
    base = web_process(workers=None, relay=relay, **env)
    expected = 1 if relay is None and is_sqlite(config) else 2
    pids = worker_pids(web_process.masters[-1], expected)
    assert len(pids) == expected, pids
    return base, pids


def on_every_worker(open_one, pids, connection_socket):
    """Open connections until every worker holds one; {pid: [connections]}."""
    by_worker = {}
    for _attempt in range(ATTEMPTS):
        opened = open_one()
        by_worker.setdefault(serving_pid(connection_socket(opened), pids), []).append(opened)
        if set(by_worker) == set(pids):
            return by_worker
    raise AssertionError(f"connections reached only workers {sorted(by_worker)} of {pids}")


def feeds_on_every_worker(base, pids, account):
    def open_feed():
        client = FeedClient(base, account.token)
        assert client.receive(timeout=10)["type"] == "connection_established"
        return client
    return on_every_worker(open_feed, pids, lambda client: client.ws.sock)


def callers_on_every_worker(base, pids, account):
    """Keep-alive connections, one request made on each (so that a worker accepted it)."""
    def open_caller():
        connection = http.client.HTTPConnection(base, timeout=10)
        assert rest(base, "GET", "/both/status/me", account, connection=connection)[0] == 200
        return connection
    return {pid: found[0] for pid, found in
            on_every_worker(open_caller, pids, lambda caller: caller.sock).items()}


def every(by_worker):
    return [item for items in by_worker.values() for item in items]


def expect_types(client, types):
    received = [client.receive(timeout=10) for _ in types]
    assert [message["type"] for message in received] == types, received
    return received


def close_all(*groups):
    for group in groups:
        for item in every(group) if isinstance(group, dict) else group:
            item.close()


@RELAYS
def test_every_socket_gets_each_event_once(web_process, config, customer, listener, relay):
    base, pids = start_web(web_process, config, relay)
    listener_feeds = feeds_on_every_worker(base, pids, listener)
    customer_feeds = feeds_on_every_worker(base, pids, customer)
    callers = callers_on_every_worker(base, pids, customer)
    listener_callers = callers_on_every_worker(base, pids, listener)
    first, last = pids[0], pids[-1]
    try:
        status, body = rest(base, "POST", "/favorites/add", customer,
                            {"listener_id": listener.id}, connection=callers[first])
        assert (status, body["is_favorited"]) == (200, True)
        for client in every(listener_feeds):
            added, = expect_types(client, ["favorite_added"])
            assert added["data"]["user_id"] == customer.id
        # The customer's sockets now watch the listener, on every worker.
        status, _ = rest(base, "POST", "/both/status/heartbeat", listener,
                         connection=listener_callers[last])
        assert status == 200
        for client in every(customer_feeds) + every(listener_feeds):
            online, = expect_types(client, ["listener_online"])
            assert online["data"]["user_id"] == listener.id
        status, body = rest(base, "DELETE", "/favorites/remove", customer,
                            {"listener_id": listener.id}, connection=callers[last])
        assert (status, body["is_favorited"]) == (200, False)
        for client in every(listener_feeds):
            expect_types(client, ["favorite_removed"])
        time.sleep(SETTLE_SECONDS)
        for client in every(listener_feeds) + every(customer_feeds):
            client.expect_nothing_queued()
    finally:
        close_all(listener_feeds, customer_feeds, callers.values(), listener_callers.values())


FAIL_BUSY = {
    # Fails at COMMIT, after the transaction's events were staged (and notified).
    "postgresql": [
        "CREATE OR REPLACE FUNCTION saathii_test_fail() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'injected failure at commit'; END $$",
        "CREATE CONSTRAINT TRIGGER saathii_test_fail_busy AFTER UPDATE ON user_status "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.is_busy) "
        "EXECUTE FUNCTION saathii_test_fail()",
    ],
    # SQLite has no deferred triggers: the write fails after the event was emitted.
    "sqlite": [
        "CREATE TRIGGER saathii_test_fail_busy BEFORE UPDATE ON user_status "
        "WHEN NEW.is_busy = 1 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    ],
}
UNDO_FAIL_BUSY = {
    "postgresql": ["DROP TRIGGER saathii_test_fail_busy ON user_status",
                   "DROP FUNCTION saathii_test_fail()"],
    "sqlite": ["DROP TRIGGER saathii_test_fail_busy"],
}


def run_sql(app, statements):
    with app.app_context():
        for statement in statements[db.engine.dialect.name]:
            db.session.execute(sa.text(statement))
        db.session.commit()


@RELAYS
def test_a_change_that_rolls_back_sends_nothing(web_process, app, config, customer, listener,
                                                relay):
    base, pids = start_web(web_process, config, relay)
    watchers = feeds_on_every_worker(base, pids, customer)
    callers = callers_on_every_worker(base, pids, listener)
    try:
        for client in every(watchers):
            client.send({"type": "subscribe", "user_ids": [listener.id]})
            expect_types(client, ["subscription_confirmed"])
        assert rest(base, "POST", "/both/status/heartbeat", listener,
                    connection=callers[pids[0]])[0] == 200
        for client in every(watchers):
            expect_types(client, ["listener_online"])
        run_sql(app, FAIL_BUSY)
        try:
            for caller in callers.values():  # a failed change on every worker
                status, body = rest(base, "PUT", "/both/status/me", listener,
                                    {"is_busy": True, "wait_time": 5}, connection=caller)
                assert (status, body) == (500, {"detail": "Internal server error"})
        finally:
            run_sql(app, UNDO_FAIL_BUSY)
        status, body = rest(base, "GET", "/both/status/me", listener)
        assert (status, body["is_busy"]) == (200, False)
        time.sleep(SETTLE_SECONDS)
        status, _ = rest(base, "PUT", "/both/status/me", listener, {"is_busy": True})
        assert status == 200
        # The first thing each watcher hears is the change that committed.
        for client in every(watchers):
            busy, = expect_types(client, ["listener_busy"])
            assert busy["data"]["user_id"] == listener.id
            client.expect_nothing_queued()
    finally:
        close_all(watchers, callers.values())


def subscribe_feed(clients):
    for client in clients:
        client.send({"type": "subscribe", "subscription": "feed"})
        expect_types(client, ["subscription_confirmed"])


def collect(client, kind, count, timeout=30):
    """The subjects of the next `count` events of one kind (others are skipped)."""
    deadline, subjects = time.monotonic() + timeout, []
    while len(subjects) < count:
        message = client.receive(timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == kind:
            subjects.append(message["data"]["user_id"])
    return subjects


def test_the_clock_process_sweeps_reach_web_sockets_through_notify(
        web_process, start_process, app, config, customer, make_user):
    """Its sweep takes 80 listeners offline in one transaction: a batch of events larger
    than one notification, sent as a stored row."""
    needs_postgresql(config)
    listeners = [make_user(f"lapsing_{n}", "listener") for n in range(80)]
    base, pids = start_web(web_process, config, None, SCHEDULER_ENABLED="false")
    watchers = feeds_on_every_worker(base, pids, customer)
    callers = {}
    try:
        subscribe_feed(every(watchers))
        caller = http.client.HTTPConnection(base, timeout=10)
        callers = {0: caller}
        for account in listeners:
            assert rest(base, "POST", "/both/status/heartbeat", account,
                        connection=caller)[0] == 200
        ids = sorted(account.id for account in listeners)
        for client in every(watchers):
            assert sorted(collect(client, "listener_online", len(ids))) == ids
        start_process(["saathii.scheduler"], REDIS_URL=None, EVENT_RELAY=None,
                      NOTIFY_CHANNEL=web_process.notify_channel, SWEEP_INTERVAL_SECONDS=1,
                      PRESENCE_TIMEOUT_SECONDS=2)
        for client in every(watchers):
            assert sorted(collect(client, "listener_offline", len(ids))) == ids
        time.sleep(SETTLE_SECONDS)
        for client in every(watchers):
            client.expect_nothing_queued()
        with app.app_context():
            stored = db.session.scalar(sa.text("SELECT count(*) FROM relay_messages"))
        assert stored >= 1  # the batch went as a row, named by its notification
    finally:
        close_all(watchers, callers.values())


def relay_backends(app, pids):
    """{worker pid: backend pid} of the workers' listening connections."""
    with app.app_context():
        rows = db.session.execute(sa.text(
            "SELECT application_name, pid FROM pg_stat_activity "
            "WHERE application_name LIKE 'saathii-relay:%'")).all()
        db.session.commit()
    found = {int(name.split(":")[1]): pid for name, pid in rows}
    return {pid: found[pid] for pid in pids if pid in found}


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_terminated_listening_connection_comes_back(
        web_process, app, config, customer, listener, tmp_path):
    needs_postgresql(config)
    base, pids = start_web(web_process, config, None, LOG_LEVEL="INFO")
    watchers = feeds_on_every_worker(base, pids, customer)
    callers = callers_on_every_worker(base, pids, listener)
    try:
        subscribe_feed(every(watchers))
        before = relay_backends(app, pids)
        assert set(before) == set(pids)
        with app.app_context():
            for backend in before.values():
                db.session.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                   {"pid": backend})
            db.session.commit()
        wait_for(lambda: set(relay_backends(app, pids).values()).isdisjoint(before.values())
                 and len(relay_backends(app, pids)) == len(pids))
        # Back, each worker sends its sockets the presence written around the outage
        # again (as the test set the users up): the current state.
        read_logs_until(tmp_path, "relay back:", count=len(pids), timeout=20)
        for client in every(watchers):
            for resent in client.drain():
                assert resent["type"] in PRESENCE_TYPES, resent
                assert resent["data"]["user_id"] in (listener.id, customer.id), resent
        for pid in pids:  # a change through each worker reaches every socket once
            status, _ = rest(base, "PUT", "/both/status/me", listener,
                             {"is_online": True, "is_busy": True}, connection=callers[pid])
            assert status == 200
            for client in every(watchers):
                expect_types(client, ["listener_busy"])
            status, _ = rest(base, "PUT", "/both/status/me", listener, {"is_busy": False},
                             connection=callers[pid])
            assert status == 200
            for client in every(watchers):
                expect_types(client, ["listener_available"])
        time.sleep(SETTLE_SECONDS)
        for client in every(watchers):
            client.expect_nothing_queued()
    finally:
        close_all(watchers, callers.values())
    logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
    assert logs.count("PostgreSQL relay is down") == len(pids), logs
    assert logs.count("PostgreSQL relay carries events again") == len(pids), logs


def test_an_event_larger_than_a_notification_arrives(web_process, app, config, listener):
    """One event of over 8,000 bytes, committed by another process (this test's)."""
    needs_postgresql(config)
    from saathii.events import Event, publish_committed, transaction

    base, pids = start_web(web_process, config, None)
    feeds = feeds_on_every_worker(base, pids, listener)
    note = "n" * 9000
    try:
        with app.app_context():
            assert app.config["EVENT_RELAY"] == "postgresql"
            app.config["NOTIFY_CHANNEL"] = web_process.notify_channel
            app.extensions["saathii_realtime"].relay.channel = web_process.notify_channel
            events = [Event("presence_update", {"user_id": listener.id, "note": note},
                            subject_id=listener.id)]
            with transaction(events):
                pass  # the event alone, staged for the relay as a writer's are
            publish_committed(events)
        for client in every(feeds):
            update, = expect_types(client, ["presence_update"])
            assert update["data"] == {"user_id": listener.id, "note": note}
    finally:
        close_all(feeds)


def test_no_relay_refuses_more_than_one_worker_and_the_clock(start_process, tmp_path):
    """SQLite without REDIS_URL: events cannot leave a process, so the Procfile's web
    command refuses a second worker and the clock process refuses to run."""
    sqlite = f"sqlite:///{tmp_path / 'alone.db'}"
    web = start_process(WEB, DATABASE_URL=sqlite, WEB_CONCURRENCY=2, REDIS_URL=None,
                        EVENT_RELAY=None, PORT=0)
    clock_process = start_process(["saathii.scheduler"], DATABASE_URL=sqlite,
                                  REDIS_URL=None, EVENT_RELAY=None)
    for process in (web, clock_process):
        assert process.wait(30) != 0
    web_log, clock_log = web.log_path.read_text(), clock_process.log_path.read_text()
    assert "WEB_CONCURRENCY=2 needs an event relay" in web_log
    assert "the clock process needs an event relay" in clock_log
    for log in (web_log, clock_log):
        assert "set REDIS_URL, or use PostgreSQL" in log


LISTENERS, ROUNDS = 10, 3


def presence_views(client, listener_ids, truth, timeout=10):
    """Read a customer socket's presence events until its view of every listener (the
    last version sent) is REST's `truth`; that view, whether or not it got there."""
    view = {}
    deadline = time.monotonic() + timeout
    while view != truth and time.monotonic() < deadline:
        try:
            message = client.receive(timeout=max(0.1, deadline - time.monotonic()))
        except AssertionError:  # nothing more came
            break
        data = message["data"]
        if message["type"].startswith("listener_") and data["user_id"] in listener_ids:
            assert data["version"] > view.get(data["user_id"], (0, None))[0], message
            view[data["user_id"]] = (data["version"], data["is_busy"])
    return view


@RELAYS
def test_opposite_changes_at_once_end_every_socket_on_the_truth(
        web_process, config, customer, make_user, relay):
    """Each listener made busy and available at the same moment, on fresh connections
    (either worker writes either): every customer socket, on every worker, ends on
    what REST says, having never been sent an older version after a newer one."""
    base, pids = start_web(web_process, config, relay)
    listeners = [make_user(f"converging_{n}", "listener") for n in range(LISTENERS)]
    ids = {account.id for account in listeners}
    for account in listeners:
        assert rest(base, "POST", "/favorites/add", customer,
                    {"listener_id": account.id})[0] == 200
        assert rest(base, "POST", "/both/status/heartbeat", account)[0] == 200
    feeds = feeds_on_every_worker(base, pids, customer)
    try:
        for _round in range(ROUNDS):
            start = threading.Barrier(2 * LISTENERS)
            answers = []

            def change(account, busy):
                start.wait()
                answers.append(rest(base, "PUT", "/both/status/me", account,
                                    {"is_busy": busy})[0])
            threads = [threading.Thread(target=change, args=(account, busy))
                       for account in listeners for busy in (True, False)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers == [200] * len(threads)
        truth = {}
        for account in listeners:
            status, body = rest(base, "GET", f"/users/{account.id}/presence", customer)
            assert status == 200
            truth[account.id] = (body["version"], body["is_busy"])
        for client in every(feeds):
            assert presence_views(client, ids, truth) == truth
    finally:
        close_all(feeds)


FANS, CHURN_SECONDS = 16, 5


@RELAYS
def test_a_listener_reconnecting_with_since_under_churn_gets_every_event_once(
        app, web_process, config, listener, make_user, relay):
    """Customers add and remove the listener through both workers while the listener's
    socket drops and reconnects with `since` (the id of the last event it got): in the
    end it has received every stored event, once each."""
    base, _pids = start_web(web_process, config, relay)
    fans = [make_user(f"churning_{n}", "customer") for n in range(FANS)]
    stop = threading.Event()
    answers = []

    def churn(fan):
        while not stop.is_set():
            for path, method in (("/favorites/add", "POST"), ("/favorites/remove", "DELETE")):
                answers.append(rest(base, method, path, fan, {"listener_id": listener.id})[0])
    threads = [threading.Thread(target=churn, args=(fan,)) for fan in fans]
    for thread in threads:
        thread.start()
    received, since = [], 0
    deadline = time.monotonic() + CHURN_SECONDS
    try:
        while time.monotonic() < deadline:  # a socket lives for a few events, then drops
            client = FeedClient(base, listener.token, since=since)
            try:
                assert client.receive(timeout=10)["type"] == "connection_established"
                for _ in range(2):
                    event = client.receive(timeout=10)
                    received.append(event["id"])
                    since = event["id"]
            finally:
                client.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(answers) == {200}
    client = FeedClient(base, listener.token, since=since)  # the rest, after the churn
    try:
        hello = client.receive(timeout=10)
        assert "cursor_reset" not in hello["data"]
        while since != hello["data"]["last_event_id"]:
            event = client.receive(timeout=10)
            received.append(event["id"])
            since = event["id"]
    finally:
        client.close()
    with app.app_context(), db.engine.connect() as connection:
        stored = connection.execute(sa.text(
            "SELECT id FROM feed_events WHERE user_id = :user ORDER BY id"),
            {"user": listener.id}).scalars().all()
    assert len(received) == len(set(received)), "an event arrived twice"
    assert sorted(received) == stored, f"missing: {sorted(set(stored) - set(received))}"
