"""Bearer tokens: every way a token can be wrong gets the same 401."""
import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from saathii.extensions import db
from saathii.models import Favorite, User

from .conftest import TEST_SECRET, in_future

INVALID = {"detail": "Invalid or expired token"}


def remove_user(app, user_id, change):
    """Deactivate or delete a user behind the service's back (as an admin would)."""
    with app.app_context():
        user = db.session.get(User, user_id)
        if change == "delete":
            db.session.delete(user)
        else:
            user.is_active = False
        db.session.commit()


def _b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token(client, customer):
    response = client.get("/both/status/me", headers=customer.headers)
    assert response.status_code == 200
    assert response.json["user_id"] == customer.id


def test_user_id_claim_as_int(client, customer, token_for):
    token = token_for({"user_id": customer.id, "exp": in_future(), "type": "access"})
    response = client.get("/both/status/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json["user_id"] == customer.id


def test_token_without_type_is_accepted(client, customer, token_for):
    token = token_for({"sub": str(customer.id), "exp": in_future()})
    response = client.get("/both/status/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def bad_tokens(customer, token_for):
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    sub = str(customer.id)
    return {
        "missing": None,
        "empty bearer": "",
        "garbage": "not.a.token",
        "expired": token_for({"sub": sub, "exp": past}),
        "no exp": token_for({"sub": sub}),
        "not yet valid": token_for({"sub": sub, "exp": in_future(), "nbf": in_future(600)}),
        "wrong key": token_for({"sub": sub, "exp": in_future()}, key="another-secret-" * 4),
        "HS512": token_for({"sub": sub, "exp": in_future()}, algorithm="HS512"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}."
                    f"{_b64({'sub': sub, 'exp': int(in_future().timestamp())})}.",
        "refresh": token_for({"sub": sub, "exp": in_future(), "type": "refresh"}),
        "sub not a number": token_for({"sub": "abc", "exp": in_future()}),
        "sub as int": token_for({"sub": customer.id, "exp": in_future()}),
        "user_id as string": token_for({"user_id": sub, "exp": in_future()}),
        "user_id as bool": token_for({"user_id": True, "exp": in_future()}),
        "no user": token_for({"exp": in_future()}),
        "unknown user": token_for({"sub": "987654", "exp": in_future()}),
        "huge user id": token_for({"sub": "9" * 30, "exp": in_future()}),
    }


@pytest.mark.parametrize("case", [
    "missing", "empty bearer", "garbage", "expired", "no exp", "not yet valid", "wrong key",
    "HS512", "alg none", "refresh", "sub not a number", "sub as int", "user_id as string",
    "user_id as bool", "no user", "unknown user", "huge user id",
])
def test_bad_tokens(client, customer, token_for, case):
    token = bad_tokens(customer, token_for)[case]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    for method, path in [("get", "/both/status/me"), ("post", "/favorites/add"),
                         ("get", "/favorites"), ("get", "/users/presence?user_ids=1")]:
        response = getattr(client, method)(path, headers=headers, json={"listener_id": 1})
        assert response.status_code == 401, (case, path)
        assert response.json == INVALID
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_token_in_the_wrong_scheme_or_header(client, customer):
    for headers in ({"Authorization": f"Token {customer.token}"},
                    {"Authorization": customer.token},
                    {"X-Access-Token": customer.token}):
        response = client.get("/both/status/me", headers=headers)
        assert response.status_code == 401
        assert response.json == INVALID


@pytest.mark.parametrize("change", ["deactivate", "delete"])
def test_token_of_a_removed_user(client, app, customer, change):
    remove_user(app, customer.id, change)
    response = client.get("/favorites", headers=customer.headers)
    assert response.status_code == 401
    assert response.json == INVALID


@pytest.mark.parametrize("change", ["deactivate", "delete"])
@pytest.mark.parametrize("path", [
    "/favorites?page=1&per_page=20", "/favorites?limit=5&max_id=100",
    "/favorites?min_id=1", "/favorites?pgae=2", "/users/presence?user_ids=1,2",
    "/users/presence?user_ids=x", "/users/1/presence", "/users/x/presence",
])
def test_views_that_check_the_account_in_their_own_query(client, app, customer, listener,
                                                          change, path):
    assert client.get(path.replace("1", str(listener.id), 1),
                      headers=customer.headers).status_code in (200, 400)
    remove_user(app, customer.id, change)
    response = client.get(path, headers=customer.headers)
    assert response.status_code == 401  # even when the request itself is malformed
    assert response.json == INVALID


@pytest.mark.parametrize("change", ["deactivate", "delete"])
@pytest.mark.parametrize("method,path", [("POST", "/favorites/add"),
                                         ("DELETE", "/favorites/remove")])
@pytest.mark.parametrize("body", ["listener", "self", "unknown", "malformed"])
def test_favorite_changes_check_the_account_first(client, app, customer, listener, change,
                                                  method, path, body):
    remove_user(app, customer.id, change)
    payload = {"listener": {"listener_id": listener.id}, "self": {"listener_id": customer.id},
               "unknown": {"listener_id": 999_999}, "malformed": {"listener": "x"}}[body]
    response = client.open(path, method=method, json=payload, headers=customer.headers)
    assert response.status_code == 401
    assert response.json == INVALID
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Favorite)) == 0


def test_secret_is_the_configured_one(app):
    assert app.config["JWT_SECRET"] == TEST_SECRET


# Answered to anyone (health probes, the docs and the console's page; /metrics has its own
# METRICS_TOKEN); the feed sockets take their token as ?token= (browsers' sockets send no
# header) and check it before the upgrade (saathii/api/feed.py).
PUBLIC = {"console.console", "console.static", "docs.docs", "docs.openapi", "docs.static",
          "docs.swagger_ui", "health.healthz", "health.readyz", "metrics.metrics", "static"}
FEED = {"feed.feed", "feed.presence"}


def test_every_api_view_declares_its_authentication_outermost(app):
    """Each API view is @authenticate's wrapper itself: authenticated before anything
    else of it runs (a rate limit counts per user, so it comes after)."""
    undeclared = sorted({rule.endpoint for rule in app.url_map.iter_rules()
                         if rule.endpoint not in PUBLIC | FEED
                         and getattr(app.view_functions[rule.endpoint], "authenticates",
                                     None) is not app.view_functions[rule.endpoint]})
    assert undeclared == []
