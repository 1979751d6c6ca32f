"""Fixtures: app -> client -> users with auth headers, on a fresh schema per test (feed
sockets: tests/sockets.py; the service's own processes: tests/processes.py).

Set TEST_DATABASE_URL to run the suite on PostgreSQL; by default it runs on SQLite.
Under CI=true an unreachable TEST_DATABASE_URL fails the run instead of skipping it.
"""
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
import pytest
import sqlalchemy as sa

from config import Config, database_url
from saathii import create_app
from saathii.auth import create_access_token
from saathii.clock import clock
from saathii.domain.users import create_user
from saathii.events import bus
from saathii.extensions import db

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-keys"


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
        # Presence by REST heartbeats alone, as for clients that hold no socket: the feed's
        # tests watch heartbeats' events from sockets of the same users. Socket presence
        # (on by default) has its own tests, test_socket_presence*.py, and the checker.
        PRESENCE_FROM_SOCKETS = False
        SOCKET_PRESENCE_TICK_SECONDS = 0  # its tests tick on the clock they move
        GC_FULL_COLLECT_SECONDS = 0  # never gc.freeze() the test process (memory.py)
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


# Fixtures of their own modules, registered here (pytest finds fixtures in conftest.py).
from .processes import redis_url, start_process, web_process  # noqa: E402,F401
from .sockets import connect, live_server  # noqa: E402,F401
