"""What every answer carries, and what it never takes from the request: security and
caching headers, Link URLs from PUBLIC_BASE_URL (never the Host header), TRUSTED_HOSTS,
and /metrics kept private in production."""
import http.client
import json

import pytest

from .processes import rest

EVIL = "evil.example"


def favorite_two(client, customer, make_user):
    for name in ("asha_l", "ravi_l"):
        listener = make_user(name, "listener")
        response = client.post("/favorites/add", json={"listener_id": listener.id},
                               headers=customer.headers)
        assert response.status_code == 200


def test_a_hostile_host_never_reaches_a_link(client, customer, make_user):
    favorite_two(client, customer, make_user)
    response = client.get("/favorites?per_page=1", headers={**customer.headers, "Host": EVIL})
    assert response.status_code == 200 and len(response.json["favorites"]) == 1
    assert EVIL not in response.headers["Link"]
    assert response.headers["Link"].startswith("</favorites?")


def test_links_are_absolute_from_the_public_base_url(app_with, customer, make_user):
    client = app_with(PUBLIC_BASE_URL="https://api.saathii.example/").test_client()
    favorite_two(client, customer, make_user)
    response = client.get("/favorites?per_page=1", headers={**customer.headers, "Host": EVIL})
    assert response.status_code == 200
    links = response.headers["Link"].split(", ")
    assert links and all(link.startswith("<https://api.saathii.example/favorites?")
                         for link in links), links


def test_trusted_hosts_refuse_any_other_host(app_with, customer):
    client = app_with(TRUSTED_HOSTS=["api.saathii.example"]).test_client()
    response = client.get("/favorites", headers={**customer.headers, "Host": EVIL})
    assert (response.status_code, response.json) == (400, {"detail": "Invalid Host header"})
    response = client.get("/favorites", headers={**customer.headers,
                                                 "Host": "api.saathii.example"})
    assert response.status_code == 200 and response.json["total_count"] == 0


def test_trusted_hosts_through_gunicorn(web_process, customer):
    base = web_process(TRUSTED_HOSTS="api.saathii.example,127.0.0.1")
    connection = http.client.HTTPConnection(base, timeout=10)
    connection.request("GET", "/favorites", headers={"Host": EVIL,
                                                     "Authorization": f"Bearer {customer.token}"})
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (
        400, {"detail": "Invalid Host header"})
    assert response.getheader("Cache-Control") == "private, no-cache"
    connection.close()
    status, body = rest(base, "GET", "/favorites", customer)  # Host: 127.0.0.1:<port>
    assert (status, body["total_count"]) == (200, 0)


def test_every_answer_carries_the_security_headers(client, customer):
    answers = {
        "private": client.get("/favorites", headers=customer.headers),
        "error": client.get("/favorites", headers={"Authorization": "Bearer nope"}),
        "health": client.get("/healthz"),
        "unknown": client.get("/nowhere"),
    }
    assert [answer.status_code for answer in answers.values()] == [200, 401, 200, 404]
    for name, answer in answers.items():
        assert answer.headers["X-Content-Type-Options"] == "nosniff", name
        assert answer.headers["Referrer-Policy"] == "no-referrer", name
        assert "Strict-Transport-Security" not in answer.headers, name  # plain HTTP
    assert answers["private"].headers["Cache-Control"] == "private, no-cache"
    assert answers["error"].headers["Cache-Control"] == "private, no-cache"
    assert answers["health"].headers["Cache-Control"] == "no-store"
    assert answers["unknown"].headers["Cache-Control"] == "no-store"


def test_pages_keep_their_policy_and_the_document_may_be_cached(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    document = client.get("/openapi.json")
    assert document.status_code == 200 and document.json["openapi"].startswith("3.")
    assert document.headers["Cache-Control"] == "public, max-age=300"
    assert document.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("seconds, expected", [(31_536_000, "max-age=31536000"), (0, None)])
def test_hsts_over_https_only(app_with, customer, seconds, expected):
    client = app_with(HSTS_SECONDS=seconds).test_client()
    response = client.get("/favorites", headers=customer.headers, base_url="https://localhost")
    assert response.status_code == 200
    assert response.headers.get("Strict-Transport-Security") == expected
    plain = client.get("/favorites", headers=customer.headers)
    assert "Strict-Transport-Security" not in plain.headers


def test_metrics_are_not_public_in_production(app_with):
    response = app_with(SAATHII_ENV="production").test_client().get("/metrics")
    assert (response.status_code, response.json) == (403, {
        "detail": "Metrics are not public in production: set METRICS_TOKEN and scrape with it"})
    client = app_with(SAATHII_ENV="production", METRICS_TOKEN="scrape-secret").test_client()
    response = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert response.status_code == 200 and b"saathii_http_requests_total" in response.data
