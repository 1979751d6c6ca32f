"""The cURL examples of the Favorites API and Presence & Status API documents, run as written."""
import json
import re
import shlex

import pytest

FAVORITES_DOC = r"""
curl -X POST 'https://saathiiapp.com/favorites/add' \
  -H 'Authorization: Bearer <access_token>' \
  -H 'Content-Type: application/json' \
  -d '{
    "listener_id": 123
  }'
curl -X GET 'https://saathiiapp.com/favorites/check/123' \
  -H 'Authorization: Bearer <access_token>'
curl -X GET 'https://saathiiapp.com/favorites?page=1&per_page=20' \
  -H 'Authorization: Bearer <access_token>'
curl -X DELETE 'https://saathiiapp.com/favorites/remove' \
  -H 'Authorization: Bearer <access_token>' \
  -H 'Content-Type: application/json' \
  -d '{
    "listener_id": 123
  }'
"""

PRESENCE_DOC = r"""
curl -X GET "https://saathiiapp.com/users/me/status" \
  -H "Authorization: Bearer <access_token>"
curl -X PUT "https://saathiiapp.com/users/me/status" \
  -H "Authorization: Bearer <access_token>" \
  -H "Content-Type: application/json" \
  -d '{"is_online": true, "is_busy": false}'
curl -X POST "https://saathiiapp.com/users/me/heartbeat" \
  -H "Authorization: Bearer <access_token>"
curl -X GET "https://saathiiapp.com/users/456/presence" \
  -H "Authorization: Bearer <access_token>"
curl -X GET "https://saathiiapp.com/users/presence?user_ids=123,456,789" \
  -H "Authorization: Bearer <access_token>"
"""


def curl_commands(text, token):
    """Turn the document's curl lines into (method, path, headers, body) requests."""
    for command in re.split(r"\n(?=curl )", text.replace("\\\n", " ").strip()):
        words = shlex.split(command)
        method, headers, body = "GET", {}, None
        url = next(w for w in words if w.startswith("https://"))
        for flag, value in zip(words, words[1:]):
            if flag == "-X":
                method = value
            elif flag == "-H":
                name, _, header = value.partition(": ")
                headers[name] = header.replace("<access_token>", token)
            elif flag == "-d":
                body = value
        yield method, url.removeprefix("https://saathiiapp.com"), headers, body


def run(client, method, path, headers, body):
    return client.open(path, method=method, headers=headers, data=body)


def test_favorites_document(client, make_user):
    customer = make_user("john_doe", "customer")
    make_user("filler", "customer")
    listener = make_user("jane_smith", "listener", id=123, rating=4.8, sex="female")
    responses = [run(client, *request)
                 for request in curl_commands(FAVORITES_DOC, customer.token)]
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    added, checked, listed, removed = (r.json for r in responses)
    assert added == {"success": True, "message": "Successfully added jane_smith to favorites",
                     "listener_id": 123, "is_favorited": True}
    assert checked == {"success": True, "message": "jane_smith is in favorites",
                       "listener_id": 123, "is_favorited": True}
    assert (listed["total_count"], listed["page"], listed["per_page"], listed["has_next"],
            listed["has_previous"]) == (1, 1, 20, False, False)
    item = listed["favorites"][0]
    assert (item["user_id"], item["username"], item["rating"], item["sex"]) == \
        (listener.id, "jane_smith", 4.8, "female")
    assert removed == {"success": True,
                       "message": "Successfully removed jane_smith from favorites",
                       "listener_id": 123, "is_favorited": False}


@pytest.mark.parametrize("service_paths", [False, True])
def test_presence_document(client, make_user, service_paths):
    if service_paths:  # the same examples on /both/status/me and /both/status/heartbeat
        text = PRESENCE_DOC.replace("/users/me/status", "/both/status/me") \
            .replace("/users/me/heartbeat", "/both/status/heartbeat")
    else:
        text = PRESENCE_DOC
    alice = make_user("alice", "listener", id=123)
    make_user("jane_smith", "listener", id=456)
    responses = [run(client, *request) for request in curl_commands(text, alice.token)]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200]
    mine, updated, beat, one, many = (r.json for r in responses)
    assert (mine["user_id"], mine["is_online"], mine["is_busy"]) == (123, False, False)
    assert (updated["user_id"], updated["is_online"], updated["is_busy"], updated["wait_time"]) \
        == (123, True, False, None)
    assert beat == {"message": "Heartbeat received"}
    assert one == {"user_id": 456, "username": "jane_smith", "is_online": False,
                   "is_busy": False, "wait_time": None, "is_available": False,
                   "last_seen": None, "version": 1}
    assert [p["user_id"] for p in many] == [123, 456]
    assert many[0]["is_available"] is True and many[0]["last_seen"].endswith("Z")
    assert json.dumps(many[1]) == json.dumps(one)
