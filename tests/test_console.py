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
    script = client.get("/console/static/console.js")
    assert script.status_code == 200
    assert script.mimetype in {"text/javascript", "application/javascript"}
    assert "new WebSocket(" in script.get_data(as_text=True)
    assert script.headers["X-Content-Type-Options"] == "nosniff"
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
    for path in ("/console", "/console/static/console.js"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json == {"detail": "Not found"}


def test_console_is_off_by_default_in_production(monkeypatch):
    import importlib

    import config as config_module

    monkeypatch.setenv("SAATHII_ENV", "production")
    monkeypatch.delenv("CONSOLE_ENABLED", raising=False)
    assert importlib.reload(config_module).Config.CONSOLE_ENABLED is False
    monkeypatch.setenv("CONSOLE_ENABLED", "true")
    assert importlib.reload(config_module).Config.CONSOLE_ENABLED is True
    monkeypatch.setenv("SAATHII_ENV", "development")
    monkeypatch.delenv("CONSOLE_ENABLED")
    assert importlib.reload(config_module).Config.CONSOLE_ENABLED is True
    monkeypatch.undo()
    importlib.reload(config_module)


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
