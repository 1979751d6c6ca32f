"""Every error is JSON with a detail, never HTML and never a 500."""
import pytest
from flask import Blueprint

from saathii import create_app


def test_unknown_route(client):
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.json == {"detail": "Not found"}


@pytest.mark.parametrize("method, path, allowed", [
    ("patch", "/both/status/me", "GET, HEAD, OPTIONS, PUT"),
    ("get", "/favorites/add", "OPTIONS, POST"),
    ("post", "/favorites", "GET, HEAD, OPTIONS"),
])
def test_wrong_method(client, customer, method, path, allowed):
    response = getattr(client, method)(path, headers=customer.headers)
    assert response.status_code == 405
    assert response.json == {"detail": "Method not allowed"}
    assert response.headers["Allow"] == allowed


def test_unexpected_errors_are_json_500s(config):
    app = create_app(config)
    boom = Blueprint("boom", __name__)

    @boom.get("/boom")
    def explode():
        raise RuntimeError("secret internals")

    app.register_blueprint(boom)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json == {"detail": "Internal server error"}
    assert b"secret internals" not in response.data


def test_production_refuses_a_short_secret(config):
    class Production(config):
        SAATHII_ENV = "production"
        JWT_SECRET = "short"

    with pytest.raises(RuntimeError, match="at least 32 bytes"):
        create_app(Production)

    class NoSecret(Production):
        JWT_SECRET = None

    with pytest.raises(RuntimeError, match="at least 32 bytes"):
        create_app(NoSecret)

    class LongSecret(Production):
        JWT_SECRET = "p" * 32

    assert create_app(LongSecret).config["JWT_SECRET"] == "p" * 32


@pytest.mark.parametrize("host", ["a b", "[::1", "x/y", "h:port"])
def test_malformed_host_header(client, customer, host):
    response = client.get("/favorites", headers={**customer.headers, "Host": host})
    assert response.status_code == 400
    assert response.json == {"detail": "Invalid Host header"}


@pytest.mark.parametrize("host", ["api.saathii.example", "127.0.0.1:5000", "[::1]:8080"])
def test_good_host_headers_are_answered_and_never_reach_the_links(client, customer, host):
    response = client.get("/favorites", headers={**customer.headers, "Host": host})
    assert response.status_code == 200
    assert response.headers["Link"].startswith("</favorites?")  # a path, no host
