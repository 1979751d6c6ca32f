"""GET /favorites: page mode, cursor mode, filters, counts and Link headers."""
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from saathii.clock import clock
from saathii.extensions import db
from saathii.models import User, UserStatus

ITEM_KEYS = {
    "favorite_id", "user_id", "username", "sex", "bio", "interests", "profile_image_url",
    "preferred_language", "rating", "country", "is_online", "last_seen", "is_busy",
    "wait_time", "is_available", "favorited_at", "version",
}


def links(response):
    """The Link header as {rel: (path, query dict)}."""
    found = {}
    for url, rel in re.findall(r'<([^>]+)>; rel="([^"]+)"', response.headers.get("Link", "")):
        parts = urlsplit(url)
        assert parts.scheme == "" and parts.netloc == ""  # a path: no Host is echoed
        found[rel] = (parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()})
    return found


def set_status(app, user_id, **values):
    with app.app_context():
        db.session.execute(sa.update(UserStatus).where(UserStatus.user_id == user_id)
                           .values(**values))
        db.session.commit()


@pytest.fixture
def favorites(client, customer, make_user):
    """Five listeners favorited in order; returns their accounts, oldest first."""
    listeners = [make_user(f"listener_{n}", "listener", rating=4.5) for n in range(5)]
    for account in listeners:
        clock.advance(1)
        response = client.post("/favorites/add", json={"listener_id": account.id},
                               headers=customer.headers)
        assert response.status_code == 200
    return listeners


def test_empty_list(client, customer):
    response = client.get("/favorites", headers=customer.headers)
    assert response.status_code == 200
    assert response.json == {"favorites": [], "total_count": 0, "online_count": 0,
                             "available_count": 0, "page": 1, "per_page": 20,
                             "has_next": False, "has_previous": False}
    assert links(response) == {"prev": ("/favorites", {"limit": "20", "min_id": "0"})}


def test_items_carry_profile_and_presence(client, app, customer, listener):
    client.post("/favorites/add", json={"listener_id": listener.id}, headers=customer.headers)
    client.put("/both/status/me", json={"is_busy": True, "wait_time": 7},
               headers=listener.headers)
    response = client.get("/favorites?page=1&per_page=20&online_only=false&available_only=false",
                          headers=customer.headers)
    assert response.status_code == 200
    (item,) = response.json["favorites"]
    assert set(item) == ITEM_KEYS
    own = client.get("/both/status/me", headers=listener.headers).json
    assert item["version"] == own["version"] >= 2  # created, then made busy
    assert {k: item[k] for k in ITEM_KEYS - {"favorite_id", "last_seen", "favorited_at",
                                             "version"}} == {
        "user_id": listener.id, "username": "jane_smith", "sex": "female",
        "bio": "Here to listen", "interests": ["music"],
        "profile_image_url": "https://example.com/j.jpg", "preferred_language": "en",
        "rating": 4.8, "country": "IN", "is_online": True, "is_busy": True, "wait_time": 7,
        "is_available": False,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["favorited_at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["last_seen"])


def test_pages_newest_first(client, customer, favorites):
    response = client.get("/favorites?page=1&per_page=2", headers=customer.headers)
    assert response.status_code == 200
    body = response.json
    assert [item["username"] for item in body["favorites"]] == ["listener_4", "listener_3"]
    assert (body["total_count"], body["page"], body["per_page"],
            body["has_next"], body["has_previous"]) == (5, 1, 2, True, False)
    assert links(response) == {
        "first": ("/favorites", {"page": "1", "per_page": "2"}),
        "next": ("/favorites", {"page": "2", "per_page": "2"}),
        "last": ("/favorites", {"page": "3", "per_page": "2"}),
    }
    response = client.get("/favorites?page=3&per_page=2", headers=customer.headers)
    body = response.json
    assert [item["username"] for item in body["favorites"]] == ["listener_0"]
    assert (body["has_next"], body["has_previous"]) == (False, True)
    assert links(response)["prev"] == ("/favorites", {"page": "2", "per_page": "2"})
    assert "next" not in links(response)


def test_page_past_the_end(client, customer, favorites):
    response = client.get("/favorites?page=9&per_page=2", headers=customer.headers)
    assert response.status_code == 200
    assert response.json["favorites"] == []
    assert response.json["has_next"] is False
    assert links(response)["prev"] == ("/favorites", {"page": "3", "per_page": "2"})


def test_counts_and_filters(client, app, customer, favorites):
    set_status(app, favorites[0].id, is_online=True)
    set_status(app, favorites[1].id, is_online=True, is_busy=True, wait_time=5)
    set_status(app, favorites[2].id, is_online=True)
    everything = client.get("/favorites", headers=customer.headers).json
    assert (everything["total_count"], everything["online_count"],
            everything["available_count"]) == (5, 3, 2)
    online = client.get("/favorites?online_only=true&per_page=10", headers=customer.headers)
    assert [i["username"] for i in online.json["favorites"]] == [
        "listener_2", "listener_1", "listener_0"]
    assert (online.json["total_count"], online.json["online_count"],
            online.json["available_count"]) == (3, 3, 2)
    assert links(online)["first"] == (
        "/favorites", {"online_only": "true", "page": "1", "per_page": "10"})
    available = client.get("/favorites?available_only=1", headers=customer.headers).json
    assert [i["username"] for i in available["favorites"]] == ["listener_2", "listener_0"]
    assert (available["total_count"], available["online_count"],
            available["available_count"]) == (2, 2, 2)
    both = client.get("/favorites?available_only=true&online_only=0",
                      headers=customer.headers).json
    assert both["total_count"] == 2


def test_inactive_listeners_are_hidden(client, app, customer, favorites):
    with app.app_context():
        db.session.get(User, favorites[0].id).is_active = False
        db.session.commit()
    body = client.get("/favorites", headers=customer.headers).json
    assert body["total_count"] == 4
    assert favorites[0].id not in [item["user_id"] for item in body["favorites"]]


def test_lists_are_per_user(client, customer, make_user, favorites):
    other = make_user("priya_s", "customer")
    body = client.get("/favorites", headers=other.headers).json
    assert body["total_count"] == 0 and body["favorites"] == []


def favorite_ids(response):
    return [item["favorite_id"] for item in response.json["favorites"]]


def test_cursor_max_id(client, customer, favorites):
    head = client.get("/favorites?limit=2", headers=customer.headers)
    ids = favorite_ids(head)
    assert len(ids) == 2 and ids == sorted(ids, reverse=True)
    assert head.json["page"] == 1 and head.json["per_page"] == 2
    assert links(head) == {"next": ("/favorites", {"limit": "2", "max_id": str(ids[-1])}),
                           "prev": ("/favorites", {"limit": "2", "min_id": str(ids[0])})}
    older = client.get(f"/favorites?limit=2&max_id={ids[-1]}", headers=customer.headers)
    assert older.status_code == 200
    assert older.json["page"] is None
    assert all(i < ids[-1] for i in favorite_ids(older)) and len(favorite_ids(older)) == 2
    assert older.json["has_next"] is True and older.json["has_previous"] is True
    assert older.json["total_count"] == 5


def test_cursor_since_id_and_min_id(client, customer, favorites):
    all_ids = favorite_ids(client.get("/favorites?limit=100", headers=customer.headers))
    oldest = all_ids[-1]
    since = client.get(f"/favorites?limit=2&since_id={oldest}", headers=customer.headers)
    assert favorite_ids(since) == all_ids[:2]  # the newest above since_id
    assert since.json["has_next"] is True
    above = client.get(f"/favorites?limit=2&min_id={oldest}", headers=customer.headers)
    assert favorite_ids(above) == [all_ids[-3], all_ids[-2]]  # just above, newest first
    assert above.json["has_previous"] is True and above.json["has_next"] is True
    window = client.get(f"/favorites?min_id={oldest}&max_id={all_ids[1]}",
                        headers=customer.headers)
    assert favorite_ids(window) == all_ids[2:-1]
    below = client.get(f"/favorites?max_id={oldest}", headers=customer.headers)
    assert favorite_ids(below) == []
    assert (below.json["has_next"], below.json["has_previous"]) == (False, True)
    top = client.get(f"/favorites?min_id={all_ids[0]}", headers=customer.headers)
    assert favorite_ids(top) == []
    assert links(top) == {"prev": ("/favorites", {"limit": "20", "min_id": str(all_ids[0])})}


def test_walking_links_sees_everything_once_while_favorites_are_added(
        client, customer, favorites, make_user):
    seen, url, added = [], "/favorites?limit=2", []
    while url:
        response = client.get(url, headers=customer.headers)
        assert response.status_code == 200
        seen += favorite_ids(response)
        newcomer = make_user(f"late_{len(added)}", "listener")
        client.post("/favorites/add", json={"listener_id": newcomer.id},
                    headers=customer.headers)
        added.append(newcomer)
        nxt = links(response).get("next")
        url = f"{nxt[0]}?" + "&".join(f"{k}={v}" for k, v in nxt[1].items()) if nxt else None
    assert len(seen) == len(set(seen)) == 5
    # Walking back up from the newest seen picks up exactly the favorites added meanwhile.
    newer, url = [], f"/favorites?limit=2&min_id={max(seen)}"
    while url:
        response = client.get(url, headers=customer.headers)
        page = favorite_ids(response)
        newer += page
        url = f"/favorites?limit=2&min_id={page[0]}" if page else None
    assert len(newer) == len(set(newer)) == len(added)


@pytest.mark.parametrize("query, detail", [
    ("page=0", "page: Page must be a positive integer"),
    ("page=abc", "page: Not a valid integer"),
    ("page=1.5", "page: Not a valid integer"),
    ("per_page=0", "per_page: Per page must be between 1 and 100"),
    ("per_page=101", "per_page: Per page must be between 1 and 100"),
    ("online_only=maybe", "online_only: Must be one of true, false, 1, 0"),
    ("available_only=", "available_only: Must be one of true, false, 1, 0"),
    ("limit=0", "limit: Must be greater than or equal to 1 and less than or equal to 100"),
    ("limit=500", "limit: Must be greater than or equal to 1 and less than or equal to 100"),
    ("max_id=-1", "max_id: Must be greater than or equal to 1 and less than or equal to "
                  "9223372036854775807"),
    ("max_id=99999999999999999999", "max_id: Must be greater than or equal to 1 and less than "
                                    "or equal to 9223372036854775807"),
    ("since_id=x", "since_id: Not a valid integer"),
    ("user_id=2", "user_id: Unknown field"),
    ("pgae=2", "pgae: Unknown field"),
])
def test_bad_queries(client, customer, query, detail):
    response = client.get(f"/favorites?{query}", headers=customer.headers)
    assert response.status_code == 400
    assert response.json["detail"] == detail


def test_a_fixed_number_of_queries(client, customer, make_user, request):
    for n in range(30):
        account = make_user(f"l{n}", "listener")
        client.post("/favorites/add", json={"listener_id": account.id}, headers=customer.headers)
    statements = request.getfixturevalue("executed")  # from here on
    paged = client.get("/favorites?page=1&per_page=25", headers=customer.headers)
    assert paged.status_code == 200
    assert len(paged.json["favorites"]) == 25 and paged.json["total_count"] == 30
    paged = len(statements)
    statements.clear()
    cursored = client.get("/favorites?limit=25&max_id=1000", headers=customer.headers)
    assert cursored.status_code == 200
    assert len(cursored.json["favorites"]) == 25
    cursored = len(statements)
    # the page with the caller's account check (and, from max_id, "anything newer?"),
    # and the counts (not cached in tests)
    assert paged == 2
    assert cursored == 2


def test_cursor_parameters_win_over_page_numbers(client, customer, favorites):
    ids = favorite_ids(client.get("/favorites?limit=100", headers=customer.headers))
    mixed = client.get(f"/favorites?page=3&per_page=1&max_id={ids[1]}&limit=2",
                       headers=customer.headers)
    assert mixed.status_code == 200
    assert favorite_ids(mixed) == ids[2:4]
    assert mixed.json["page"] is None and mixed.json["per_page"] == 2
    both = client.get(f"/favorites?since_id={ids[-1]}&min_id={ids[-2]}",
                      headers=customer.headers)
    assert favorite_ids(both) == ids[:-2]  # min_id wins over since_id, as in Mastodon


def counts(client, account, query=""):
    body = client.get(f"/favorites{query}", headers=account.headers).json
    return body["total_count"], body["online_count"], body["available_count"]


def test_cached_counts_follow_own_changes_at_once_and_presence_within_the_moment(
        app, client, customer, favorites, make_user):
    app.config["FAVORITE_COUNTS_CACHE_SECONDS"] = 2
    assert counts(client, customer) == (5, 0, 0)
    client.post("/both/status/heartbeat", headers=favorites[0].headers)
    assert counts(client, customer) == (5, 0, 0)  # presence: reused for the moment
    assert client.get("/favorites", headers=customer.headers).json["favorites"][-1][
        "is_online"] is True  # while the items themselves are live
    clock.advance(2)
    assert counts(client, customer) == (5, 1, 1)
    newcomer = make_user("newcomer", "listener")
    client.post("/favorites/add", json={"listener_id": newcomer.id}, headers=customer.headers)
    assert counts(client, customer) == (6, 1, 1)  # own change: at once
    client.delete("/favorites/remove", json={"listener_id": favorites[0].id},
                  headers=customer.headers)
    assert counts(client, customer) == (5, 0, 0)
    assert counts(client, customer, "?online_only=true") == (0, 0, 0)


def test_expired_counts_are_recounted_once_while_others_reuse_them(
        app, client, customer, favorites, monkeypatch):
    from saathii.domain import favorites as domain
    app.config["FAVORITE_COUNTS_CACHE_SECONDS"] = 2
    assert counts(client, customer) == (5, 0, 0)
    client.post("/both/status/heartbeat", headers=favorites[0].headers)
    clock.advance(2)
    recounted, meanwhile = [], []
    count = domain._counts

    def counting(caller_id, which):
        recounted.append(which)
        # Another request for the same list, arriving while this one counts.
        meanwhile.append(counts(client, customer))
        return count(caller_id, which)

    monkeypatch.setattr(domain, "_counts", counting)
    assert counts(client, customer) == (5, 1, 1)
    assert recounted == ["all"]  # one count, not one per request
    assert meanwhile == [(5, 0, 0)]  # the old counts, for the moment the count takes
    assert counts(client, customer) == (5, 1, 1)
