"""The production install: a fresh virtual environment from requirements.txt alone runs
every Procfile process (release, web, clock). Nothing imports a test or dev-only tool.

One venv per test session (pip's cache keeps it quick after the first run).
"""
import http.client
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from saathii.extensions import db

from .conftest import TEST_SECRET, Account
from .processes import ROOT, free_port, read_logs_until, rest, wait_until_listening

pytestmark = pytest.mark.install

DEV_ONLY = {"pytest", "schemathesis", "hypothesis", "playwright"}


def procfile():
    """The Procfile's processes: {name: argv}."""
    lines = Path(ROOT, "Procfile").read_text().splitlines()
    return {name: shlex.split(command)
            for name, command in (line.split(":", 1) for line in lines if line.strip())}


@pytest.fixture(scope="session")
def lean_venv(tmp_path_factory):
    """A virtual environment with requirements.txt installed, and nothing else."""
    venv = tmp_path_factory.mktemp("lean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-r", str(Path(ROOT, "requirements.txt"))],
        capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


@pytest.fixture
def lean(lean_venv, app, config, tmp_path):
    """Run a Procfile command from the lean venv (its bin first on PATH, in the checkout, as
    a platform runs it) on the test database; started processes are stopped afterwards,
    before the app fixture drops the schema (a running clock's sweep would deadlock with
    the DROP TABLE)."""
    started = []
    environment = {
        key: value for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "REDIS_URL", "EVENT_RELAY"}}
    environment.update({
        "PATH": f"{lean_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(lean_venv), "DATABASE_URL": config.SQLALCHEMY_DATABASE_URI,
        "SAATHII_ENV": "production", "JWT_SECRET": TEST_SECRET, "LOG_LEVEL": "INFO",
        "NOTIFY_CHANNEL": f"saathii_test_{uuid.uuid4().hex}", "WEB_CONCURRENCY": "1"})

    def run(argv, **env):
        """Run to completion; return the CompletedProcess."""
        return subprocess.run(argv, cwd=ROOT, env={**environment, **env},
                              capture_output=True, text=True, timeout=120)

    def start(argv, **env):
        """Start in the background, output to a log file the test's tmp_path holds."""
        log_path = tmp_path / f"process-{len(started)}.log"
        with open(log_path, "w") as log_file:
            process = subprocess.Popen(argv, cwd=ROOT, env={**environment, **env},
                                       stdout=log_file, stderr=subprocess.STDOUT)
        process.log_path = log_path
        started.append(process)
        return process

    run.start = start
    yield run
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get(base, path):
    """The body of a 200 response to GET path."""
    connection = http.client.HTTPConnection(base, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, path
        return response.read()
    finally:
        connection.close()


@pytest.fixture
def empty_database(app):
    """The test database without tables: the release phase creates them."""
    with app.app_context():
        db.drop_all()
    yield
    with app.app_context():
        db.session.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
        db.session.commit()


def test_requirements_txt_holds_no_dev_tool(lean):
    listed = lean(["python", "-m", "pip", "list", "--format=json"])
    assert listed.returncode == 0, listed.stderr
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"flask", "gunicorn", "gevent", "psycopg"} <= installed
    assert installed & DEV_ONLY == set()
    dev = Path(ROOT, "requirements-dev.txt").read_text().splitlines()
    assert dev[[line.startswith("#") for line in dev].index(False)] == "-r requirements.txt"


def test_the_procfile_runs_from_requirements_txt_alone(empty_database, lean, tmp_path):
    processes = procfile()
    assert processes["web"] == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]

    release = lean(processes["release"])  # flask --app wsgi db upgrade
    assert release.returncode == 0, release.stdout + release.stderr
    users = tmp_path / "users.json"
    users.write_text(json.dumps([{"username": "lean_listener", "role": "listener"}]))
    imported = lean(["flask", "--app", "wsgi", "users", "import", str(users)])
    assert imported.returncode == 0, imported.stderr
    user_id = json.loads(imported.stdout)[0]["id"]
    token = lean(["flask", "--app", "wsgi", "users", "token", str(user_id)])
    assert token.returncode == 0, token.stderr
    account = Account(user_id, "lean_listener", token.stdout.strip())

    port = free_port()
    web = lean.start(processes["web"], PORT=str(port))
    wait_until_listening(web, port)
    base = f"127.0.0.1:{port}"
    assert "/both/status/heartbeat" in json.loads(get(base, "/openapi.json"))["paths"]
    assert b"SwaggerUIBundle" in get(base, "/docs/swagger-ui/swagger-ui-bundle.js")
    assert rest(base, "POST", "/both/status/heartbeat", account) == (
        200, {"message": "Heartbeat received"})
    status, body = rest(base, "GET", "/both/status/me", account)
    assert status == 200
    assert (body["user_id"], body["is_online"], body["is_busy"]) == (user_id, True, False)
    logs = read_logs_until(tmp_path, '"GET /both/status/me HTTP/1.1" 200')
    assert "Traceback" not in logs


def test_the_clock_process_runs_from_requirements_txt_alone(lean, redis_url, tmp_path):
    clock = lean.start(procfile()["clock"], REDIS_URL=redis_url,
                       REDIS_CHANNEL=f"saathii:test:{uuid.uuid4().hex}")
    logs = read_logs_until(tmp_path, "clock process: sweeping every", timeout=60)
    assert clock.poll() is None, logs
    assert "Traceback" not in logs
