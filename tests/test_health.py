"""Health and readiness: /healthz and /readyz without a token, 503 naming what failed."""
import threading

import pytest

from saathii import create_app
from saathii.api.health import DatabaseCheck

# Nothing listens on port 1: connections are refused at once.
CLOSED_POSTGRESQL = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"
CLOSED_REDIS = "redis://127.0.0.1:1/0"


def relay_in_use(config):
    return not config.SQLALCHEMY_DATABASE_URI.startswith("sqlite")


def test_healthz_answers_without_a_token(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_checks_the_database_and_the_relay(app, client, config):
    response = client.get("/readyz")
    assert response.status_code == 200
    expected = {"database": "ok"}
    if relay_in_use(config):  # PostgreSQL: LISTEN/NOTIFY, started by the probe itself
        expected["relay"] = "ok"
    expected["sockets"] = "ok"
    assert response.json == {"status": "ok", "checks": expected}


@pytest.fixture
def app_with(config):
    """An app of the test config with some settings changed (its relay stopped after)."""
    made = []

    def make(**settings):
        made.append(create_app(type("Changed", (config,), settings)))
        return made[-1]

    yield make
    for app in made:
        app.extensions["saathii_realtime"].stop()


def test_readyz_names_a_relay_that_is_down(app_with):
    app = app_with(REDIS_URL=CLOSED_REDIS, EVENT_RELAY="redis")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable",
                             "checks": {"database": "ok", "relay": "down", "sockets": "ok"}}


def test_readyz_names_a_database_that_is_down(app_with):
    app = app_with(SQLALCHEMY_DATABASE_URI=CLOSED_POSTGRESQL, EVENT_RELAY="postgresql")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable",
                             "checks": {"database": "down", "relay": "down", "sockets": "ok"}}
    assert app.test_client().get("/healthz").json == {"status": "ok"}  # it still serves


class StuckEngine:
    """An engine whose connections hang until released, counting the attempts."""

    def __init__(self):
        self.release = threading.Event()
        self.attempts = 0

    def connect(self):
        self.attempts += 1
        self.release.wait(30)
        raise OSError("gave up")


def test_a_stalled_database_times_out_and_probes_share_one_check():
    check, engine = DatabaseCheck(), StuckEngine()
    assert check(engine, timeout=0.2) == "timeout"
    assert check(engine, timeout=0.2) == "timeout"  # joins the check in flight
    assert engine.attempts == 1  # one connection held, however many probes
    engine.release.set()  # the stuck check ends ("down")
    check.run[1].wait(5)
    assert check(engine, timeout=5) == "down"  # the next probe starts a new check
    assert engine.attempts == 2


def test_probes_are_outside_the_rate_limits(app_with):
    app = app_with(RATELIMIT_ENABLED=True, RATELIMIT_HEARTBEAT="1 per minute",
                   RATELIMIT_PRESENCE_LOOKUPS="1 per minute")
    client = app.test_client()
    answers = [client.get(path).status_code for path in ("/healthz", "/readyz") * 5]
    assert answers == [200] * 10
