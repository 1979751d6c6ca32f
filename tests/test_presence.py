"""My status, heartbeats, status updates and presence look-ups."""
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from saathii.clock import clock
from saathii.domain import beats
from saathii.events import bus
from saathii.extensions import db
from saathii.models import UserStatus

from .test_beats import until

STATUS_KEYS = {"user_id", "is_online", "is_busy", "wait_time", "last_seen", "created_at",
               "updated_at", "version"}
ME = ["/both/status/me", "/users/me/status"]
HEARTBEAT = ["/both/status/heartbeat", "/users/me/heartbeat"]
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.mark.parametrize("path", ME)
def test_new_users_start_offline(client, listener, path):
    response = client.get(path, headers=listener.headers)
    assert response.status_code == 200
    body = response.json
    assert set(body) == STATUS_KEYS
    assert {k: body[k] for k in ("user_id", "is_online", "is_busy", "wait_time", "last_seen")} \
        == {"user_id": listener.id, "is_online": False, "is_busy": False, "wait_time": None,
            "last_seen": None}
    assert re.fullmatch(ISO, body["created_at"]) and re.fullmatch(ISO, body["updated_at"])


@pytest.mark.parametrize("path", HEARTBEAT)
def test_heartbeat_brings_a_user_online(client, listener, events, path):
    response = client.post(path, headers=listener.headers)
    assert response.status_code == 200
    assert response.json == {"message": "Heartbeat received"}
    status = client.get("/both/status/me", headers=listener.headers).json
    assert status["is_online"] is True
    assert status["last_seen"] == status["updated_at"]
    assert [e.type for e in events] == ["listener_online"]
    assert events[0].data == {
        "user_id": listener.id, "username": "jane_smith", "is_online": True, "is_busy": False,
        "wait_time": None, "is_available": True, "last_seen": events[0].data["last_seen"],
        "version": status["version"]}


def test_heartbeat_of_an_online_user_moves_last_seen_and_sends_nothing(
        client, listener, events):
    client.post("/both/status/heartbeat", headers=listener.headers)
    first = client.get("/both/status/me", headers=listener.headers).json["last_seen"]
    clock.advance(30)
    client.post("/both/status/heartbeat", headers=listener.headers)
    second = client.get("/both/status/me", headers=listener.headers).json["last_seen"]
    assert second > first
    assert [e.type for e in events] == ["listener_online"]


def test_customers_send_presence_update(client, customer, events):
    client.post("/users/me/heartbeat", headers=customer.headers)
    assert [e.type for e in events] == ["presence_update"]


@pytest.mark.parametrize("path", ME)
def test_update_status(client, listener, events, path):
    response = client.put(path, json={"is_online": True, "is_busy": True, "wait_time": 15},
                          headers=listener.headers)
    assert response.status_code == 200
    body = response.json
    assert set(body) == STATUS_KEYS
    assert (body["user_id"], body["is_online"], body["is_busy"], body["wait_time"]) == \
        (listener.id, True, True, 15)
    assert [e.type for e in events] == ["listener_busy"]


def test_busy_then_available_then_offline(client, listener, events):
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 5},
               headers=listener.headers)
    body = client.put("/both/status/me", json={"is_busy": False},
                      headers=listener.headers).json
    assert (body["is_online"], body["is_busy"], body["wait_time"]) == (True, False, None)
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 5},
               headers=listener.headers)
    body = client.put("/both/status/me", json={"is_online": False},
                      headers=listener.headers).json
    assert (body["is_online"], body["is_busy"], body["wait_time"]) == (False, False, None)
    assert [e.type for e in events] == [
        "listener_busy", "listener_available", "listener_busy", "listener_offline"]


def test_changing_wait_time_while_busy(client, listener, events):
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 5},
               headers=listener.headers)
    body = client.put("/both/status/me", json={"wait_time": 20}, headers=listener.headers).json
    assert (body["is_busy"], body["wait_time"]) == (True, 20)
    body = client.put("/both/status/me", json={"wait_time": None},
                      headers=listener.headers).json
    assert (body["is_busy"], body["wait_time"]) == (True, None)
    assert [e.type for e in events] == ["listener_busy", "listener_busy", "listener_busy"]


def test_an_update_that_changes_nothing_sends_nothing(client, listener, events):
    client.put("/both/status/me", json={"is_online": True}, headers=listener.headers)
    client.put("/both/status/me", json={"is_online": True, "is_busy": False},
               headers=listener.headers)
    assert [e.type for e in events] == ["listener_online"]


@pytest.mark.parametrize("body, detail", [
    ({}, "No status fields to update"),
    ({"is_online": False, "is_busy": True}, "A user who is offline cannot be busy"),
    ({"is_busy": False, "wait_time": 5}, "wait_time can only be set while busy"),
    ({"is_online": False, "wait_time": 5}, "wait_time can only be set while busy"),
    ({"user_id": 2}, "user_id: Unknown field"),
    ({"last_seen": "2024-01-01T00:00:00Z"}, "last_seen: Unknown field"),
    ({"is_online": "yes"}, "is_online: Not a valid boolean"),
    ({"is_busy": 1}, "is_busy: Not a valid boolean"),
    ({"is_busy": True, "wait_time": -1},
     "wait_time: Must be greater than or equal to 0 and less than or equal to 1440"),
    ({"is_busy": True, "wait_time": 10**30},
     "wait_time: Must be greater than or equal to 0 and less than or equal to 1440"),
    ({"is_busy": True, "wait_time": 2.5}, "wait_time: Not a valid integer"),
    ({"is_busy": True, "wait_time": "5"}, "wait_time: Not a valid integer"),
])
def test_bad_updates_change_nothing(client, listener, events, body, detail):
    before = client.get("/both/status/me", headers=listener.headers).json
    response = client.put("/both/status/me", json=body, headers=listener.headers)
    assert response.status_code == 400
    assert response.json["detail"] == detail
    assert client.get("/both/status/me", headers=listener.headers).json == before
    assert events == []


def test_wait_time_for_a_user_who_is_not_busy_is_a_conflict(client, listener, events):
    response = client.put("/both/status/me", json={"wait_time": 5}, headers=listener.headers)
    assert response.status_code == 409
    assert response.json == {"detail": "wait_time can only be set while busy"}
    assert client.get("/both/status/me", headers=listener.headers).json["wait_time"] is None
    assert events == []


def test_put_needs_a_json_object(client, listener):
    response = client.put("/users/me/status", data="true", content_type="application/json",
                          headers=listener.headers)
    assert response.status_code == 400
    assert response.json == {"detail": "Request body must be a JSON object"}


def test_one_users_presence(client, customer, listener):
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 3},
               headers=listener.headers)
    response = client.get(f"/users/{listener.id}/presence", headers=customer.headers)
    assert response.status_code == 200
    body = response.json
    assert re.fullmatch(ISO, body.pop("last_seen"))
    own = client.get("/both/status/me", headers=listener.headers).json
    assert body == {"user_id": listener.id, "username": "jane_smith", "is_online": True,
                    "is_busy": True, "wait_time": 3, "is_available": False,
                    "version": own["version"]}


def test_presence_of_unknown_user(client, customer):
    response = client.get("/users/987654/presence", headers=customer.headers)
    assert response.status_code == 404
    assert response.json == {"detail": "User status not found"}


@pytest.mark.parametrize("raw", ["me", "-3", "0", "18446744073709551616"])
def test_presence_rejects_bad_ids(client, customer, raw):
    response = client.get(f"/users/{raw}/presence", headers=customer.headers)
    assert response.status_code == 400
    assert response.json["detail"] == "user_id must be a positive integer"


def test_batch_presence(client, customer, listener, make_user):
    other = make_user("meera_k", "listener")
    client.post("/both/status/heartbeat", headers=other.headers)
    ids = f"{other.id},999999,{listener.id},{other.id}"
    response = client.get(f"/users/presence?user_ids={ids}", headers=customer.headers)
    assert response.status_code == 200
    body = response.json
    assert [p["user_id"] for p in body] == sorted([listener.id, other.id])
    by_id = {p["user_id"]: p for p in body}
    assert by_id[listener.id] == {"user_id": listener.id, "username": "jane_smith",
                                  "is_online": False, "is_busy": False, "wait_time": None,
                                  "is_available": False, "last_seen": None, "version": 1}
    assert by_id[other.id]["is_available"] is True


def test_batch_of_exactly_100(client, customer):
    ids = ",".join(str(n) for n in range(1, 101))
    response = client.get(f"/users/presence?user_ids={ids}", headers=customer.headers)
    assert response.status_code == 200
    assert [p["user_id"] for p in response.json] == [customer.id]


def test_batch_too_many(client, customer):
    ids = ",".join(str(n) for n in range(1, 102))
    response = client.get(f"/users/presence?user_ids={ids}", headers=customer.headers)
    assert response.status_code == 400
    assert response.json == {"detail": "Too many user IDs requested"}


@pytest.mark.parametrize("raw", ["", "abc", "1,,2", "1,2,", "1;2", "-1", "0", "1.5",
                                 "99999999999999999999", "1,x"])
def test_batch_bad_format(client, customer, raw):
    response = client.get(f"/users/presence?user_ids={raw}", headers=customer.headers)
    assert response.status_code == 400
    assert response.json == {"detail": "Invalid user IDs format"}


def test_batch_without_user_ids(client, customer):
    response = client.get("/users/presence", headers=customer.headers)
    assert response.status_code == 400
    assert response.json["detail"] == "user_ids: Missing data for required field"


def test_concurrent_updates_never_mix_into_a_bad_state(app, listener):
    """Going busy and going offline at once: one wins whole, never busy while offline."""
    def put(body):
        response = app.test_client().put("/users/me/status", json=body,
                                         headers=listener.headers)
        return response.status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(15):
            app.test_client().put("/users/me/status", json={"is_online": True, "is_busy": False},
                                  headers=listener.headers)
            codes = list(pool.map(put, [{"is_busy": True, "wait_time": 7},
                                        {"is_online": False}]))
            assert set(codes) <= {200, 409}
            status = app.test_client().get("/users/me/status", headers=listener.headers).json
            assert status["is_online"] or not status["is_busy"], status
            assert status["is_busy"] or status["wait_time"] is None, status


def test_database_refuses_busy_while_offline(app, listener):
    with app.app_context():
        for values in ({"is_online": False, "is_busy": True},
                       {"is_online": True, "is_busy": False, "wait_time": 5}):
            with pytest.raises(sa.exc.IntegrityError):
                db.session.execute(sa.update(UserStatus)
                                   .where(UserStatus.user_id == listener.id).values(**values))
                db.session.commit()
            db.session.rollback()


def test_a_user_without_a_status_row_gets_one(app, client, listener, customer):
    with app.app_context():
        db.session.execute(sa.delete(UserStatus).where(UserStatus.user_id == listener.id))
        db.session.commit()
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    listed = client.get("/favorites", headers=customer.headers).json["favorites"]
    assert [(f["user_id"], f["is_online"], f["is_available"]) for f in listed] == [
        (listener.id, False, False)]
    response = client.get("/both/status/me", headers=listener.headers)
    assert response.status_code == 200
    assert (response.json["user_id"], response.json["is_online"]) == (listener.id, False)
    assert client.post("/both/status/heartbeat", headers=listener.headers).status_code == 200
    assert client.get("/both/status/me", headers=listener.headers).json["is_online"] is True


def test_ids_with_thousands_of_digits(client, customer):
    huge = "9" * 4400
    for path in (f"/users/{huge}/presence", f"/favorites/check/{huge}"):
        response = client.get(path, headers=customer.headers)
        assert response.status_code == 400
    response = client.get(f"/users/presence?user_ids={huge}", headers=customer.headers)
    assert response.status_code == 400
    assert response.json == {"detail": "Invalid user IDs format"}


def test_a_committed_change_whose_event_fails_to_publish_is_still_answered(
        app, client, listener, monkeypatch, caplog):
    """A first beat with no status row yet (the row is made and the user comes online in
    one transaction): the change committed, so its request hears 200, the failure is
    logged (by the writer, after the answer), and the change is there."""
    with app.app_context():
        db.session.delete(db.session.get(UserStatus, listener.id))
        db.session.commit()

        def broken(event):
            raise RuntimeError("a subscriber failed")

        monkeypatch.setattr(bus(), "publish", broken)
    response = client.post("/both/status/heartbeat", headers=listener.headers)
    assert (response.status_code, response.json) == (200, {"message": "Heartbeat received"})
    with app.app_context():
        writer = beats.batcher()
    until(lambda: not writer.writing)
    assert "publishing a committed event failed" in caplog.text
    monkeypatch.undo()
    mine = client.get("/both/status/me", headers=listener.headers)
    assert mine.status_code == 200 and mine.json["is_online"] is True
