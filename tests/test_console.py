"""The live console page: what the server sends (headers, demo users, switch)."""
import json
import re

import pytest

from saathii import create_app


@pytest.fixture
def demo_file(app):
    """Write the demo tokens file the way `flask demo` does."""

    def write(users):
        path = app.config["DEMO_TOKENS_FILE"]
        path.write_text(json.dumps(users))
        return path

    return write


def embedded_demo_users(page):
    found = re.search(r'<script type="application/json" id="demo-users-data">(.*?)</script>',
                      page, re.S)
    assert found, "the page has no demo users block"
    return json.loads(found.group(1))


def test_console_page_has_a_strict_policy_and_no_inline_code(client):
    response = client.get("/console")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = dict(part.strip().split(" ", 1) for part in
                  response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' ws://localhost wss://localhost"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = response.get_data(as_text=True)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert [attributes.strip() for attributes, body in scripts if body.strip()] == [
        'type="application/json" id="demo-users-data"']  # data, never code
    assert not re.search(r"\son[a-z]+\s*=", page, re.I)  # no inline event handlers
    assert not re.search(r"\sstyle\s*=|<style", page, re.I)  # no inline styles
    assert embedded_demo_users(page) == []


def test_console_script_and_styles_are_served_from_the_package(client):
    for name in ("main.js", "api.js", "dom.js", "status.js", "favorites.js", "feed.js"):
        script = client.get(f"/console/static/{name}")
        assert script.status_code == 200, name
        assert script.mimetype in {"text/javascript", "application/javascript"}  # modules
        assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert "new WebSocket(" in client.get("/console/static/feed.js").get_data(as_text=True)
    styles = client.get("/console/static/console.css")
    assert (styles.status_code, styles.mimetype) == (200, "text/css")
    missing = client.get("/console/static/nothing.js")
    assert missing.status_code == 404
    assert missing.json == {"detail": "Not found"}


def test_demo_users_are_listed_with_valid_tokens_only(client, demo_file, customer, listener,
                                                      token_for):
    expired = token_for({"sub": str(listener.id), "exp": 1})
    demo_file([
        {"id": customer.id, "username": customer.username, "role": "customer",
         "token": customer.token},
        {"id": listener.id, "username": listener.username, "role": "listener",
         "token": expired},
        {"id": 99, "username": "forged", "role": "listener",
         "token": token_for({"sub": "99", "exp": 4102444800}, key="another-key" * 4)},
        {"id": 98, "username": "gone", "role": "listener",  # from an older database
         "token": token_for({"sub": "98", "exp": 4102444800})},
    ])
    page = client.get("/console").get_data(as_text=True)
    assert embedded_demo_users(page) == [
        {"id": customer.id, "username": "john_doe", "role": "customer",
         "token": customer.token}]


def test_a_broken_demo_file_lists_nobody(client, app):
    app.config["DEMO_TOKENS_FILE"].write_text("{not json")
    response = client.get("/console")
    assert response.status_code == 200
    assert embedded_demo_users(response.get_data(as_text=True)) == []


def test_demo_users_are_never_listed_in_production(config, demo_file, app, customer):
    demo_file([{"id": customer.id, "username": "john_doe", "role": "customer",
                "token": customer.token}])

    class Production(config):
        SAATHII_ENV = "production"
        JWT_SECRET = config.JWT_SECRET
        CONSOLE_ENABLED = True

    production = create_app(Production)
    response = production.test_client().get("/console")
    assert response.status_code == 200
    assert embedded_demo_users(response.get_data(as_text=True)) == []


def test_console_can_be_switched_off(config):
    class Off(config):
        CONSOLE_ENABLED = False

    client = create_app(Off).test_client()
    for path in ("/console", "/console/static/main.js"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json == {"detail": "Not found"}


def test_demo_users_are_listed_only_when_asked(config, demo_file, customer):
    demo_file([{"id": customer.id, "username": "john_doe", "role": "customer",
                "token": customer.token}])

    class Quiet(config):
        CONSOLE_DEMO_USERS = False

    response = create_app(Quiet).test_client().get("/console")
    assert response.status_code == 200
    assert embedded_demo_users(response.get_data(as_text=True)) == []


@pytest.fixture
def config_from(monkeypatch):
    """The Config class as the environment given would build it."""
    import importlib

    import config as config_module

    def build(**environment):
        for name in ("SAATHII_ENV", "DATABASE_URL", "CONSOLE_ENABLED", "CONSOLE_DEMO_USERS"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        return importlib.reload(config_module).Config

    yield build
    monkeypatch.undo()
    importlib.reload(config_module)


def test_console_defaults(config_from):
    demo = config_from()  # the embedded demo: SQLite, development
    assert (demo.CONSOLE_ENABLED, demo.CONSOLE_DEMO_USERS) == (True, True)
    production = config_from(DATABASE_URL="postgres://db/saathii")
    assert production.SAATHII_ENV == "production"
    assert (production.CONSOLE_ENABLED, production.CONSOLE_DEMO_USERS) == (False, False)
    staging = config_from(DATABASE_URL="postgres://db/saathii", SAATHII_ENV="development")
    assert (staging.CONSOLE_ENABLED, staging.CONSOLE_DEMO_USERS) == (True, False)
    switched_on = config_from(DATABASE_URL="postgres://db/saathii", CONSOLE_ENABLED="true")
    assert switched_on.CONSOLE_ENABLED is True


def test_demo_command_saves_its_tokens_for_the_console(app, client):
    result = app.test_cli_runner().invoke(args=["demo", "--base-url", "http://example.test"])
    assert result.exit_code == 0, result.output
    assert "Live console: http://example.test/console" in result.output
    users = embedded_demo_users(client.get("/console").get_data(as_text=True))
    assert [(user["username"], user["role"]) for user in users] == [
        ("john_doe", "customer"), ("priya_s", "customer"), ("jane_smith", "listener"),
        ("arjun_rao", "listener"), ("meera_k", "listener"), ("sam_lee", "listener")]
    printed = re.search(r"export CUSTOMER=(\S+)", result.output).group(1)
    assert users[0]["token"] == printed
    mine = client.get("/both/status/me", headers={"Authorization": f"Bearer {printed}"})
    assert (mine.status_code, mine.json["user_id"]) == (200, users[0]["id"])
    assert oct(app.config["DEMO_TOKENS_FILE"].stat().st_mode & 0o777) == "0o600"


def test_demo_tokens_file_is_private_even_over_a_stale_one(app):
    stale = app.config["DEMO_TOKENS_FILE"].with_suffix(".tmp")
    stale.write_text("[]")
    stale.chmod(0o644)
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert oct(app.config["DEMO_TOKENS_FILE"].stat().st_mode & 0o777) == "0o600"
    assert not stale.exists()
