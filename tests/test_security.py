"""Token attacks on REST and the socket alike, tokens kept out of logs, and no way to
read or change another user's favorites or status."""
import json

import pytest


from .processes import read_logs_until, rest
from .sockets import FeedClient
from .test_auth import INVALID, bad_tokens, remove_user
from .test_feed import upgrade

CASES = ["missing", "empty bearer", "garbage", "expired", "no exp", "not yet valid",
         "wrong key", "HS512", "alg none", "refresh", "sub not a number", "sub as int",
         "user_id as string", "user_id as bool", "no user", "unknown user", "huge user id"]


@pytest.mark.parametrize("case", CASES)
def test_bad_tokens_get_no_socket(live_server, customer, token_for, case):
    token = bad_tokens(customer, token_for)[case]
    query = "" if token is None else f"?token={token}"
    status, body = upgrade(live_server, f"/ws/feed{query}")
    assert status == 401
    assert json.loads(body) == INVALID


@pytest.mark.parametrize("change", ["deactivate", "delete"])
def test_removed_users_get_no_socket(app, live_server, customer, change):
    remove_user(app, customer.id, change)
    status, _ = upgrade(live_server, f"/ws/feed?token={customer.token}")
    assert status == 401


def test_token_in_the_wrong_place_gets_no_socket(live_server, customer):
    status, _ = upgrade(live_server, f"/ws/feed?access_token={customer.token}")
    assert status == 401


def test_tokens_never_reach_gunicorns_log(web_process, customer, tmp_path):
    server = web_process()
    socket = FeedClient(server, customer.token)
    assert socket.receive(timeout=10)["type"] == "connection_established"
    socket.close()
    assert rest(server, "GET", f"/favorites?token={customer.token}", customer)[0] == 400
    assert rest(server, "GET", "/favorites", customer)[0] == 200
    logs = read_logs_until(tmp_path, '"GET /favorites HTTP/1.1" 200')  # the access log is on
    assert customer.token not in logs
    assert customer.token.split(".")[2] not in logs


def test_nobody_reads_or_changes_anothers_favorites(client, customer, listener, make_user):
    victim = make_user("victim", "customer")
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=victim.headers)
    attempts = [
        client.get(f"/favorites?user_id={victim.id}", headers=customer.headers),
        client.post("/favorites/add", json={"listener_id": listener.id, "user_id": victim.id},
                    headers=customer.headers),
        client.delete("/favorites/remove",
                      json={"listener_id": listener.id, "user_id": victim.id},
                      headers=customer.headers),
        client.get(f"/favorites/check/{listener.id}?user_id={victim.id}",
                   headers=customer.headers),
    ]
    assert [r.status_code for r in attempts] == [400, 400, 400, 200]
    assert attempts[3].json["is_favorited"] is False  # the caller's own answer, not the victim's
    # Removing "the listener" as the attacker touches only the attacker's own list.
    removed = client.delete("/favorites/remove", json={"listener_id": listener.id},
                            headers=customer.headers)
    assert removed.json["message"] == "jane_smith was not in favorites"
    mine = client.get("/favorites", headers=customer.headers).json
    assert mine["total_count"] == 0
    theirs = client.get("/favorites", headers=victim.headers).json
    assert [f["user_id"] for f in theirs["favorites"]] == [listener.id]


def test_nobody_changes_anothers_status(client, customer, listener):
    before = client.get("/both/status/me", headers=listener.headers).json
    attempts = [
        client.put("/both/status/me", json={"user_id": listener.id, "is_online": True},
                   headers=customer.headers),
        client.put(f"/users/me/status?user_id={listener.id}", json={"is_online": True},
                   headers=customer.headers),
        client.post(f"/both/status/heartbeat?user_id={listener.id}",
                    headers=customer.headers),
        client.put(f"/users/{listener.id}/status", json={"is_online": True},
                   headers=customer.headers),
        client.post(f"/users/{listener.id}/heartbeat", headers=customer.headers),
    ]
    # Paths have no user id to change, bodies refuse one, and a stray query parameter is
    # ignored: these calls change the caller's own status, or nothing.
    assert [r.status_code for r in attempts] == [400, 200, 200, 404, 404]
    assert attempts[1].json["user_id"] == customer.id
    assert client.get("/both/status/me", headers=listener.headers).json == before
