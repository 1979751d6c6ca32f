"""Admin commands: db upgrade, users import, users token, demo."""
import json

import jwt
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from saathii.extensions import db
from saathii.models import User, UserStatus

from .conftest import TEST_SECRET


def test_migrations_build_the_models_schema(app):
    with app.app_context():
        db.drop_all()
        result = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, db.metadata) == []
        db.session.execute(sa.text("DROP TABLE alembic_version"))
        db.session.commit()


def write(tmp_path, data):
    path = tmp_path / "users.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_import_users(app, tmp_path):
    path = write(tmp_path, [
        {"id": 123, "username": "jane_smith", "role": "listener", "sex": "female",
         "rating": 4.8, "interests": ["music", "travel"], "country": "IN"},
        {"username": "john_doe", "role": "customer"},
    ])
    result = app.test_cli_runner().invoke(args=["users", "import", path])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created[0] == {"id": 123, "username": "jane_smith"}
    assert created[1]["username"] == "john_doe"
    with app.app_context():
        jane = db.session.get(User, 123)
        assert (jane.role, jane.rating, jane.interests) == ("listener", 4.8, ["music", "travel"])
        status = db.session.get(UserStatus, 123)
        assert (status.is_online, status.is_busy) == (False, False)
        # New ids continue past imported ones, on PostgreSQL's sequence too.
        again = app.test_cli_runner().invoke(
            args=["users", "import", write(tmp_path, [{"username": "x", "role": "customer"}])])
        assert again.exit_code == 0, again.output
        assert json.loads(again.output)[0]["id"] > 123


def count_users(app):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(User))


def test_import_is_all_or_nothing(app, tmp_path, make_user):
    make_user("taken", "customer")
    cases = {
        '[{"username": "a", "role": "listener"}, {"username": "taken", "role": "customer"}]':
            "usernames already exist: taken",
        '[{"username": "a", "role": "listener"}, {"username": "a", "role": "customer"}]':
            "duplicate username 'a'",
        '[{"username": "a", "role": "admin"}]': "Must be one of: listener, customer",
        '[{"username": "a", "role": "listener", "rating": 7}]': "rating",
        '[{"username": "a", "role": "listener", "colour": "red"}]': "Unknown field",
        '[{"role": "listener"}]': "Missing data for required field",
        '{"username": "a"}': "must hold a JSON array",
        "not json": "is not valid JSON",
    }
    for data, message in cases.items():
        result = app.test_cli_runner().invoke(args=["users", "import", write(tmp_path, data)])
        assert result.exit_code == 1, data
        assert message in result.output, (data, result.output)
        assert count_users(app) == 1


def test_token_command(app, customer):
    result = app.test_cli_runner().invoke(
        args=["users", "token", str(customer.id), "--expires-in", "60"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(customer.id) and claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 60
    missing = app.test_cli_runner().invoke(args=["users", "token", "999999"])
    assert missing.exit_code == 1
    assert "no user with id 999999" in missing.output


def test_demo_seeds_once_and_prints_working_tokens(app, client):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo", "--base-url", "http://example.test"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(args=["demo"])
    assert second.exit_code == 0, second.output
    assert count_users(app) == 6
    token = next(line.split("=", 1)[1].split()[0] for line in first.output.splitlines()
                 if "export CUSTOMER=" in line)
    response = client.get("/favorites", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json["total_count"] == 3
    assert (response.json["online_count"], response.json["available_count"]) == (2, 1)
    assert "curl -s -X POST" in first.output and "http://example.test/favorites/add" in first.output
