"""Saathii presence and favorites service."""
import re
import sqlite3
from pathlib import Path

from flask import Flask, request
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.exceptions import SecurityError
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config, event_relay

from logformat import log_format

from . import (admission, database, deadline, events, headers, logs, metrics, rate_limits,
               realtime, scheduler, slow_readers)
from .api import read_body
from .errors import bad_request, register_error_handlers
from .extensions import db, migrate, sock
from .json_provider import OrjsonProvider
from .logs import configure_logging
from .threads import light_thread

MIN_SECRET_BYTES = 32


def check_config(config):
    """Refuse to start with settings that are unsafe in production."""
    secret = config.get("JWT_SECRET") or ""
    if config["SAATHII_ENV"] == "production" and len(secret.encode()) < MIN_SECRET_BYTES:
        raise RuntimeError(
            "JWT_SECRET must be set to at least 32 bytes in production "
            "(set SAATHII_ENV=development for a local demo)")
    if not secret:
        raise RuntimeError("JWT_SECRET is empty")
    try:
        config["EVENT_RELAY"] = event_relay(config["SQLALCHEMY_DATABASE_URI"],
                                            config.get("REDIS_URL"), config.get("EVENT_RELAY"))
    except ValueError as err:
        raise RuntimeError(str(err)) from None
    try:
        config["LOG_FORMAT"] = log_format(config.get("LOG_FORMAT") or "text")
    except ValueError as err:
        raise RuntimeError(str(err)) from None


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _prepare_database(config):
    """PostgreSQL: bounded connects, keepalives and a statement timeout. SQLite: make its
    folder and set the busy timeout."""
    url = config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("postgresql"):
        options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {
            **database.postgresql_connect_args(config["DB_STATEMENT_TIMEOUT_SECONDS"]),
            **options.get("connect_args", {})}
        config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    if not url.startswith("sqlite"):
        return
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    options = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    options["connect_args"] = {
        **options.get("connect_args", {}), "timeout": config["SQLITE_BUSY_TIMEOUT_MS"] / 1000}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = options


HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def check_host():
    """Refuse a malformed Host header, and one outside TRUSTED_HOSTS when that is set."""
    try:
        host = request.host  # Werkzeug checks it against TRUSTED_HOSTS
    except SecurityError:
        raise bad_request("Invalid Host header") from None
    if not HOST.fullmatch(host):
        raise bad_request("Invalid Host header")


def create_app(config_class=Config):
    """Build the Flask application."""
    app = Flask(__name__, static_folder=None)
    app.json = OrjsonProvider(app)
    app.config.from_object(config_class)
    check_config(app.config)
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": app.config["FEED_PING_INTERVAL_SECONDS"],
        "max_message_size": app.config["FEED_MAX_MESSAGE_BYTES"],
        "thread_class": light_thread,  # each socket's reader: a bare greenlet under gevent
    }
    configure_logging(app.config.get("LOG_LEVEL", "INFO"), app.config["LOG_FORMAT"])
    logs.init_app(app)  # first: every response, errors included, carries a request id
    metrics.init_app(app)
    _prepare_database(app.config)
    if app.config.get("PROXY_FIX"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    slow_readers.init_app(app)

    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=str(app.config["MIGRATIONS_DIR"]))
    sock.init_app(app)
    rate_limits.init_app(app)
    events.init_app(app)
    realtime.init_app(app)
    scheduler.init_app(app)
    register_error_handlers(app)
    headers.init_app(app)
    app.before_request(check_host)
    app.before_request(read_body)  # before any hook or view takes a database connection
    admission.init_app(app)  # once the body is in: a slow sender holds no slot
    deadline.init_app(app)  # from when the body is in

    from .api import docs, favorites, feed, health, presence
    app.register_blueprint(health.bp)
    if app.config["METRICS_ENABLED"]:
        from .api import metrics as metrics_api
        app.register_blueprint(metrics_api.bp)
    app.register_blueprint(favorites.bp)
    app.register_blueprint(feed.bp)
    app.register_blueprint(presence.bp)
    app.register_blueprint(docs.bp)
    if app.config["CONSOLE_ENABLED"]:
        from .api import console
        app.register_blueprint(console.bp)

    from .cli import demo, users
    app.cli.add_command(users.users)
    app.cli.add_command(demo.demo)
    return app
