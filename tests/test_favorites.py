"""POST /favorites/add, DELETE /favorites/remove, GET /favorites/check/{id}."""
import http.client
import json

import pytest
import sqlalchemy as sa

from saathii.extensions import db
from saathii.models import Favorite, User


def add(client, who, listener_id):
    return client.post("/favorites/add", json={"listener_id": listener_id}, headers=who.headers)


def remove(client, who, listener_id):
    return client.delete("/favorites/remove", json={"listener_id": listener_id},
                         headers=who.headers)


def test_add_favorite(client, customer, listener, events):
    response = add(client, customer, listener.id)
    assert response.status_code == 200
    assert response.json == {
        "success": True, "message": "Successfully added jane_smith to favorites",
        "listener_id": listener.id, "is_favorited": True,
    }
    assert [(e.type, e.subject_id, e.data) for e in events] == [
        ("favorite_added", listener.id,
         {"user_id": customer.id, "username": "john_doe", "action": "added_you_to_favorites"})]


def test_add_twice_is_idempotent_and_sends_no_second_event(client, customer, listener, events):
    add(client, customer, listener.id)
    response = add(client, customer, listener.id)
    assert response.status_code == 200
    assert response.json == {
        "success": True, "message": "Already favorited jane_smith",
        "listener_id": listener.id, "is_favorited": True,
    }
    assert [e.type for e in events] == ["favorite_added"]


def test_cannot_favorite_yourself(client, listener):
    response = add(client, listener, listener.id)
    assert response.status_code == 400
    assert response.json == {"detail": "Cannot favorite yourself"}


@pytest.mark.parametrize("kind", ["unknown", "customer", "inactive"])
def test_add_needs_an_active_listener(client, customer, make_user, kind):
    target = {
        "unknown": 999_999,
        "customer": make_user("other_customer", "customer").id,
        "inactive": make_user("gone_listener", "listener", is_active=False).id,
    }[kind]
    response = add(client, customer, target)
    assert response.status_code == 404
    assert response.json == {"detail": "Listener not found"}


def test_listeners_can_favorite_listeners(client, listener, make_user):
    other = make_user("meera_k", "listener")
    response = add(client, listener, other.id)
    assert response.status_code == 200
    assert response.json["message"] == "Successfully added meera_k to favorites"


def test_remove_favorite(client, customer, listener, events):
    add(client, customer, listener.id)
    response = remove(client, customer, listener.id)
    assert response.status_code == 200
    assert response.json == {
        "success": True, "message": "Successfully removed jane_smith from favorites",
        "listener_id": listener.id, "is_favorited": False,
    }
    assert [e.type for e in events] == ["favorite_added", "favorite_removed"]
    assert events[1].data == {"user_id": customer.id, "username": "john_doe",
                              "action": "removed_you_from_favorites"}


def test_remove_when_not_favorited(client, customer, listener, events):
    response = remove(client, customer, listener.id)
    assert response.status_code == 200
    assert response.json == {
        "success": True, "message": "jane_smith was not in favorites",
        "listener_id": listener.id, "is_favorited": False,
    }
    assert events == []


def test_remove_unknown_user(client, customer):
    response = remove(client, customer, 424242)
    assert response.status_code == 404
    assert response.json == {"detail": "Listener not found"}


def test_remove_works_for_a_deactivated_listener(client, app, customer, listener):
    add(client, customer, listener.id)
    with app.app_context():
        db.session.get(User, listener.id).is_active = False
        db.session.commit()
    response = remove(client, customer, listener.id)
    assert response.status_code == 200
    assert response.json["message"] == "Successfully removed jane_smith from favorites"


def test_check(client, customer, listener):
    response = client.get(f"/favorites/check/{listener.id}", headers=customer.headers)
    assert response.status_code == 200
    assert response.json == {"success": True, "message": "jane_smith is not in favorites",
                             "listener_id": listener.id, "is_favorited": False}
    add(client, customer, listener.id)
    response = client.get(f"/favorites/check/{listener.id}", headers=customer.headers)
    assert response.status_code == 200
    assert response.json == {"success": True, "message": "jane_smith is in favorites",
                             "listener_id": listener.id, "is_favorited": True}


def test_check_is_per_user(client, customer, listener, make_user):
    add(client, customer, listener.id)
    other = make_user("priya_s", "customer")
    response = client.get(f"/favorites/check/{listener.id}", headers=other.headers)
    assert response.json["is_favorited"] is False


def test_check_unknown(client, customer):
    response = client.get("/favorites/check/777", headers=customer.headers)
    assert response.status_code == 404
    assert response.json == {"detail": "Listener not found"}


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5", "99999999999999999999", "%20"])
def test_check_rejects_bad_ids(client, customer, raw):
    response = client.get(f"/favorites/check/{raw}", headers=customer.headers)
    assert response.status_code == 400
    assert response.json["detail"] == "listener_id must be a positive integer"


@pytest.mark.parametrize("body, detail", [
    ({}, "listener_id: Missing data for required field"),
    ({"listener_id": "123"}, "listener_id: Not a valid integer"),
    ({"listener_id": True}, "listener_id: Not a valid integer"),
    ({"listener_id": 1.5}, "listener_id: Not a valid integer"),
    ({"listener_id": None}, "listener_id: Field may not be null"),
    ({"listener_id": -4}, "listener_id: Must be greater than or equal to 1 and less than or "
                          "equal to 9223372036854775807"),
    ({"listener_id": 2**64}, "listener_id: Must be greater than or equal to 1 and less than or "
                             "equal to 9223372036854775807"),
    ({"listener_id": 1, "user_id": 2}, "user_id: Unknown field"),
])
@pytest.mark.parametrize("method, path", [("post", "/favorites/add"),
                                          ("delete", "/favorites/remove")])
def test_bad_bodies(client, customer, method, path, body, detail):
    response = getattr(client, method)(path, json=body, headers=customer.headers)
    assert response.status_code == 400
    assert response.json["detail"] == detail
    assert "errors" in response.json


@pytest.mark.parametrize("data, content_type, status, detail", [
    ("", "application/json", 400, "Request body is required"),
    ("{not json", "application/json", 400, "Malformed JSON body"),
    ("[1, 2]", "application/json", 400, "Request body must be a JSON object"),
    ("listener_id=1", "application/x-www-form-urlencoded", 415,
     "Content-Type must be application/json"),
    ('{"listener_id": 1}', "text/plain", 415, "Content-Type must be application/json"),
    ("\xff\xfe", "application/json", 400, "Malformed JSON body"),
])
def test_malformed_requests(client, customer, data, content_type, status, detail):
    response = client.post("/favorites/add", data=data, content_type=content_type,
                           headers=customer.headers)
    assert response.status_code == status
    assert response.json == {"detail": detail}


def test_oversized_body(client, customer):
    body = '{"listener_id": 1, "pad": "' + "x" * 17000 + '"}'
    response = client.post("/favorites/add", data=body, content_type="application/json",
                           headers=customer.headers)
    assert response.status_code == 413
    assert response.json == {"detail": "Request body too large (the limit is 16 KiB)"}


def test_deleting_a_user_removes_their_favorites(client, app, customer, listener):
    add(client, customer, listener.id)
    with app.app_context():
        db.session.delete(db.session.get(User, listener.id))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Favorite)) == 0


def test_database_refuses_self_favorites_and_duplicates(app, customer, listener):
    with app.app_context():
        db.session.add(Favorite(user_id=customer.id, listener_id=customer.id))
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.add_all([Favorite(user_id=customer.id, listener_id=listener.id),
                            Favorite(user_id=customer.id, listener_id=listener.id)])
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()


@pytest.mark.parametrize("body", ["[" * 3000 + "]" * 3000, '{"a":' * 1000 + "1" + "}" * 1000])
def test_deeply_nested_json(client, customer, body):
    response = client.post("/favorites/add", data=body, content_type="application/json",
                           headers=customer.headers)
    assert response.status_code == 400
    assert response.json == {"detail": "Malformed JSON body"}


def test_chunked_oversized_body_is_refused(live_server, customer, listener):
    body = '{"listener_id": %d' % listener.id + " " * 40000 + "garbage}"
    connection = http.client.HTTPConnection(live_server, timeout=10)
    connection.request("POST", "/favorites/add", body=iter([body.encode()]),
                       headers={**customer.headers, "Content-Type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {"detail": "Request body too large (the limit is 16 KiB)"}


def test_favorite_ids_are_never_reused(client, customer, listener, make_user):
    add(client, customer, listener.id)
    first = client.get("/favorites", headers=customer.headers).json["favorites"][0]
    remove(client, customer, listener.id)
    other = make_user("meera_k", "listener")
    add(client, customer, other.id)
    second = client.get("/favorites", headers=customer.headers).json["favorites"][0]
    assert second["favorite_id"] > first["favorite_id"]
    newer = client.get(f"/favorites?min_id={first['favorite_id']}", headers=customer.headers)
    assert [f["user_id"] for f in newer.json["favorites"]] == [other.id]


def test_check_names_only_active_listeners(app, client, customer, listener, make_user):
    from saathii.extensions import db
    from saathii.models import User

    other_customer = make_user("priya_s", "customer")
    with app.app_context():
        db.session.get(User, listener.id).is_active = False
        db.session.commit()
    for user_id in (other_customer.id, listener.id):
        response = client.get(f"/favorites/check/{user_id}", headers=customer.headers)
        assert (response.status_code, response.json) == (404, {"detail": "Listener not found"})
