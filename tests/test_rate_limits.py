"""Per-user rate limits: 429 JSON with Retry-After past the limit, per user, off by switch."""
import time
import uuid

import pytest

from saathii import create_app
from saathii.limits import LazyMemoryStorage

from .conftest import free_port, rest


@pytest.fixture
def limited(app, config):
    """A client of an app with small limits, on the same database as `app`."""

    class Limited(config):
        RATELIMIT_ENABLED = True
        RATELIMIT_HEARTBEAT = "3 per minute"
        RATELIMIT_FAVORITE_CHANGES = "2 per minute"
        RATELIMIT_PRESENCE_LOOKUPS = "2 per minute"

    return create_app(Limited).test_client()


def assert_limited(response):
    assert response.status_code == 429
    assert response.json == {"detail": "Too many requests"}
    assert int(response.headers["Retry-After"]) > 0


def test_heartbeats_are_limited_per_user_across_both_paths(limited, listener, customer):
    client = limited
    beat = lambda who, path: client.post(path, headers=who.headers)  # noqa: E731
    assert beat(listener, "/both/status/heartbeat").status_code == 200
    assert beat(listener, "/users/me/heartbeat").status_code == 200
    assert beat(listener, "/both/status/heartbeat").status_code == 200
    assert_limited(beat(listener, "/users/me/heartbeat"))
    assert beat(customer, "/both/status/heartbeat").status_code == 200  # another user
    assert client.get("/both/status/me", headers=listener.headers).status_code == 200


def test_favorite_changes_are_limited(limited, customer, listener):
    client = limited
    body = {"listener_id": listener.id}
    assert client.post("/favorites/add", json=body, headers=customer.headers).status_code == 200
    assert client.delete("/favorites/remove", json=body,
                         headers=customer.headers).status_code == 200
    assert_limited(client.post("/favorites/add", json=body, headers=customer.headers))
    listed = client.get("/favorites", headers=customer.headers)
    assert listed.status_code == 200 and listed.json["total_count"] == 0  # nothing applied


def test_presence_lookups_are_limited(limited, customer, listener):
    client = limited
    assert client.get(f"/users/{listener.id}/presence",
                      headers=customer.headers).status_code == 200
    assert client.get(f"/users/presence?user_ids={listener.id}",
                      headers=customer.headers).status_code == 200
    assert_limited(client.get(f"/users/{listener.id}/presence", headers=customer.headers))


def test_limits_can_be_switched_off(app, client, listener):
    for _ in range(20):
        assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200


def test_the_limit_holds_across_processes_with_redis(web_process, listener):
    settings = {"RATELIMIT_ENABLED": "true", "RATELIMIT_HEARTBEAT": "4 per minute",
                "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    server_a, server_b = web_process(**settings), web_process(**settings)
    codes = [rest(server, "POST", "/both/status/heartbeat", listener)
             for server in (server_a, server_b, server_a, server_b, server_a)]
    assert [status for status, _ in codes] == [200, 200, 200, 200, 429]
    assert codes[-1][1] == {"detail": "Too many requests"}


def test_limited_answers_carry_rate_limit_headers(limited, listener):
    first = limited.post("/both/status/heartbeat", headers=listener.headers)
    assert first.status_code == 200 and first.json == {"message": "Heartbeat received"}
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert int(first.headers["X-RateLimit-Reset"]) > time.time()
    assert 0 < int(first.headers["Retry-After"]) <= 61
    limited.post("/users/me/heartbeat", headers=listener.headers)
    third = limited.post("/both/status/heartbeat", headers=listener.headers)
    assert third.headers["X-RateLimit-Remaining"] == "0"
    refused = limited.post("/both/status/heartbeat", headers=listener.headers)
    assert_limited(refused)
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # Routes without a limit carry none of these headers.
    mine = limited.get("/both/status/me", headers=listener.headers)
    assert mine.status_code == 200 and "X-RateLimit-Limit" not in mine.headers


def test_an_unreachable_storage_falls_back_to_memory(app, config, listener, caplog):
    class Unreachable(config):
        RATELIMIT_ENABLED = True
        RATELIMIT_HEARTBEAT = "2 per minute"
        RATELIMIT_STORAGE_URI = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens

    client = create_app(Unreachable).test_client()
    codes = [client.post("/both/status/heartbeat", headers=listener.headers).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]  # still limited, in this process's memory
    assert "falling back to in-memory storage" in caplog.text


def test_memory_counters_expire_in_passing_without_a_timer():
    storage = LazyMemoryStorage()
    storage.incr("gone", expiry=-1)  # a window that has already ended
    storage.incr("kept", expiry=60)
    assert "gone" in storage.expirations
    storage.next_expiry = 0  # the periodic clean-up is due: the next hit runs it
    storage.incr("kept", expiry=60)
    assert "gone" not in storage.expirations and storage.get("kept") == 2
