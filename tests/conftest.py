"""Fixtures: app -> client -> users with auth headers, on a fresh schema per test.

Set TEST_DATABASE_URL to run the suite on PostgreSQL; by default it runs on SQLite.
Under CI=true an unreachable TEST_DATABASE_URL fails the run instead of skipping it.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import redis
import simple_websocket
import sqlalchemy as sa
from werkzeug.serving import make_server

from config import Config, database_url
from saathii import create_app
from saathii.auth import create_access_token
from saathii.clock import clock
from saathii.domain.users import create_user
from saathii.events import bus
from saathii.extensions import db

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-keys"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reachable(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def database_uri(tmp_path_factory):
    """The test database: TEST_DATABASE_URL, or a SQLite file in a temporary folder."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    url = database_url(url)
    if not _reachable(url):
        message = f"TEST_DATABASE_URL is not reachable: {url}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def config(database_uri, tmp_path):
    """A Config for tests, on the test database."""

    class TestConfig(Config):
        TESTING = True
        SAATHII_ENV = "testing"
        JWT_SECRET = TEST_SECRET
        SCHEDULER_ENABLED = False  # tests run sweeps themselves, on a clock they move
        RATELIMIT_ENABLED = False  # the rate-limit tests turn it on
        FAVORITE_COUNTS_CACHE_SECONDS = 0  # counts are exact; the cache has its own tests
        # The relay follows the test database (PostgreSQL: LISTEN/NOTIFY), whatever the
        # environment says; the Redis tests start processes with REDIS_URL themselves.
        REDIS_URL = None
        EVENT_RELAY = "auto"
        SQLALCHEMY_DATABASE_URI = database_uri
        DEMO_TOKENS_FILE = tmp_path / "demo-tokens.json"
        CONSOLE_DEMO_USERS = True  # on PostgreSQL too

    return TestConfig


@pytest.fixture
def app(config):
    """The app, on a freshly created schema, with the clock stopped (tests move it)."""
    clock.freeze()
    app = create_app(config)
    with app.app_context():
        db.drop_all()
        db.session.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()
        db.create_all()
    yield app
    app.extensions["saathii_realtime"].stop()  # its relay's listening connection
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    clock.reset()


@pytest.fixture
def app_with(config):
    """Make apps of the test config with some settings changed."""

    def make(**settings):
        return create_app(type("Changed", (config,), settings))

    yield make
    create_app(config)  # the metrics hooks follow the last app made: back to the default


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def executed(app, monkeypatch):
    """Every SQL statement the app sends from now on, in order. On PostgreSQL they are
    read off psycopg's cursors (hot reads bypass SQLAlchemy's execution), elsewhere off
    SQLAlchemy's before_cursor_execute."""
    statements = []
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "postgresql":
        import psycopg
        execute = psycopg.Cursor.execute

        def recording(cursor, query, params=None, **kwargs):
            statements.append(query)
            return execute(cursor, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", recording)
        yield statements
        return

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    yield statements
    sa.event.remove(engine, "before_cursor_execute", record)


@dataclass
class Account:
    """A user the tests act as."""

    id: int
    username: str
    token: str

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(app):
    """Create a user (with an offline status row) and return an Account for them."""
    counter = iter(range(1, 10**6))

    def make(username=None, role="listener", **profile):
        with app.app_context():
            user = create_user(username=username or f"{role}_{next(counter)}", role=role,
                               **profile)
            db.session.commit()
            return Account(user.id, user.username, create_access_token(user.id))

    return make


@pytest.fixture
def listener(make_user):
    return make_user("jane_smith", "listener", sex="female", rating=4.8,
                     interests=["music"], bio="Here to listen", country="IN",
                     preferred_language="en", profile_image_url="https://example.com/j.jpg")


@pytest.fixture
def customer(make_user):
    return make_user("john_doe", "customer")


@pytest.fixture
def events(app):
    """Every event published while the test runs, in order."""
    published = []
    with app.app_context():
        bus().subscribe(published.append)
    return published


@pytest.fixture
def token_for(app):
    """Sign arbitrary claims with the test secret (or another key or algorithm)."""

    def sign(claims, key=TEST_SECRET, algorithm="HS256", headers=None):
        return jwt.encode(claims, key, algorithm=algorithm, headers=headers)

    return sign


def in_future(seconds=3600):
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def serve(app):
    """Serve an app over real HTTP in a background thread: yields its base URL, then
    stops it (a generator for fixtures)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


@pytest.fixture
def live_server(app):
    """The app served over real HTTP in a background thread; yields its base URL."""
    yield from serve(app)


class WebSocketClient(simple_websocket.Client):
    """simple-websocket's client, keeping frames that arrive with the handshake response
    (it would otherwise leave the server's greeting unread until more data came)."""

    def handshake(self):
        super().handshake()
        self._handle_events()


class FeedClient:
    """A feed socket as a test sees it: JSON in, JSON out."""

    def __init__(self, base, token, since=None, path="/ws/feed"):
        query = f"?token={token}" + (f"&since={since}" if since is not None else "")
        self.ws = WebSocketClient.connect(f"ws://{base}{path}{query}")

    def send(self, message):
        self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def receive(self, timeout=5):
        raw = self.ws.receive(timeout=timeout)
        assert raw is not None, "no message arrived in time"
        return json.loads(raw)

    def expect_nothing_queued(self):
        """Prove no message is waiting: the next one answers this no-op request.

        Events are queued before the REST call that caused them returns, and a socket's
        messages leave in order, so anything queued would arrive before the answer.
        """
        self.send({"type": "unsubscribe", "user_ids": []})
        message = self.receive()
        assert message["type"] == "subscription_confirmed", message
        return message

    def drain(self):
        """Every message queued before a no-op request's answer (see expect_nothing_queued)."""
        self.send({"type": "unsubscribe", "user_ids": []})
        drained = []
        while (message := self.receive())["type"] != "subscription_confirmed":
            drained.append(message)
        return drained

    def close(self):
        try:
            self.ws.close()
        except simple_websocket.ConnectionClosed:
            pass


@pytest.fixture
def connect(live_server):
    """Open feed sockets that are closed after the test; the first message is checked."""
    opened = []

    def open_socket(account, since=None, path="/ws/feed"):
        client = FeedClient(live_server, account.token, since, path)
        opened.append(client)
        client.hello = client.receive()
        assert client.hello["type"] == "connection_established"
        assert client.hello["data"].keys() == {"user_id", "last_event_id"}
        assert client.hello["data"]["user_id"] == account.id
        return client

    yield open_socket
    for client in opened:
        client.close()


@pytest.fixture(scope="session")
def redis_url():
    """A reachable Redis (TEST_REDIS_URL, default the local one); under CI=true, required."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        message = f"Redis at {url} is not reachable: {err}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def start_process(app, config, tmp_path):
    """Start a service process (gunicorn with the Procfile's settings, or another module)
    on the test database; everything started is stopped after the test. Each process's
    output goes to a log file (a pipe nobody reads would fill up and stall it)."""
    started = []

    def start(args, wait_for_port=None, **env):
        """env: variables to set; a None value removes a variable."""
        environment = {
            **os.environ, "DATABASE_URL": config.SQLALCHEMY_DATABASE_URI,
            "JWT_SECRET": TEST_SECRET, "SAATHII_ENV": "testing", "LOG_LEVEL": "WARNING",
            **{key: str(value) for key, value in env.items() if value is not None},
        }
        for key in [key for key, value in env.items() if value is None]:
            environment.pop(key, None)
        log_path = tmp_path / f"process-{len(started)}.log"
        with open(log_path, "w") as log_file:
            process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT,
                                       env=environment, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        process.log_path = log_path
        started.append(process)
        if wait_for_port:
            wait_until_listening(process, wait_for_port)
        return process

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_listening(process, port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.log_path.read_text() if hasattr(process, "log_path") else ""
            raise RuntimeError(f"process exited early:\n{output}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


@pytest.fixture
def web_process(start_process, request):
    """Start a gunicorn web process (the Procfile's command and settings); return its
    host:port. By default one worker on Redis; relay=None leaves REDIS_URL unset (events
    then go through PostgreSQL, or stay in the process on SQLite), workers=None leaves
    the worker count to the Procfile's default. Each test gets its own channels."""
    suffix = uuid.uuid4().hex
    channel = f"saathii:test:{suffix}"

    def start(workers=1, relay="redis", **env):
        port = free_port()
        redis = request.getfixturevalue("redis_url") if relay == "redis" else None
        settings = {"PORT": port, "WEB_CONCURRENCY": workers, "REDIS_URL": redis,
                    "REDIS_CHANNEL": channel, "NOTIFY_CHANNEL": f"saathii_test_{suffix}",
                    "EVENT_RELAY": None, "RATELIMIT_ENABLED": "false", **env}
        process = start_process(["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                                wait_for_port=port, **settings)
        start.masters.append(process.pid)
        start.processes.append(process)
        return f"127.0.0.1:{port}"

    start.channel = channel
    start.notify_channel = f"saathii_test_{suffix}"
    start.masters = []
    start.processes = []
    return start


def read_logs_until(tmp_path, line, timeout=10, count=1):
    """The processes' logs once they hold a line (`count` times): gunicorn writes the
    access log only after the response has gone out, so the client can be faster than
    the log."""
    deadline = time.monotonic() + timeout
    while True:
        logs = "".join(path.read_text() for path in tmp_path.glob("process-*.log"))
        if logs.count(line) >= count or time.monotonic() > deadline:
            assert logs.count(line) >= count, logs
            return logs
        time.sleep(0.05)


def rest(base, method, path, account, body=None, connection=None):
    """Call a live server's REST API as an account; return (status, JSON body). On a
    given keep-alive connection (left open), or on a new one."""
    own = connection is None
    if own:
        connection = http.client.HTTPConnection(base, timeout=10)
    headers = {"Authorization": f"Bearer {account.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    result = response.status, json.loads(response.read() or b"null")
    if own:
        connection.close()
    return result
