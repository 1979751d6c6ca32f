"""Pooled PostgreSQL connections: checked on checkout without a round trip while healthy,
replaced without an error when the server dropped them while they sat idle."""
import time

import psycopg
import pytest
import sqlalchemy as sa

from saathii.extensions import db


@pytest.fixture
def postgres(app, config):
    if not config.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
        pytest.skip("the test database is not PostgreSQL")
    url = sa.make_url(config.SQLALCHEMY_DATABASE_URI).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pings(app, monkeypatch):
    """Count the pings the pool sends."""
    sent = []
    with app.app_context():
        dialect = db.engine.dialect
    real = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: sent.append(1) or real(conn))
    return sent


def terminate_other_sessions(url):
    """End every other session on the test database, as a server restart would, and
    wait until they are gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        others = ("select pid from pg_stat_activity where datname = current_database() "
                  "and pid <> pg_backend_pid()")
        conn.execute(f"select pg_terminate_backend(pid) from ({others}) as s")
        deadline = time.monotonic() + 10
        while conn.execute(others).fetchone() and time.monotonic() < deadline:
            time.sleep(0.02)


def test_healthy_pooled_connections_are_not_pinged(postgres, pings, client, listener):
    for _ in range(5):
        assert client.get("/both/status/me", headers=listener.headers).status_code == 200
    assert pings == []


def test_connections_dropped_while_idle_are_replaced(postgres, pings, client, listener):
    for _ in range(3):
        assert client.get("/both/status/me", headers=listener.headers).status_code == 200
    terminate_other_sessions(postgres)
    for _ in range(3):
        response = client.get("/both/status/me", headers=listener.headers)
        assert response.status_code == 200, response.json
        assert response.json["user_id"] == listener.id
    assert pings  # the dropped connection was noticed, pinged and replaced


def assert_pooled_connections_transactional(app):
    """After autocommit reads, every pooled connection is transactional again."""
    with app.app_context():
        for _ in range(db.engine.pool.size()):
            connection = db.session.connection()
            assert connection.get_isolation_level() != "AUTOCOMMIT"
            db.session.remove()


def test_reads_run_without_a_transaction_and_leave_none_behind(app, config, client, customer):
    if config.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
        pytest.skip("on PostgreSQL reads run on psycopg itself (the test below)")
    isolation = []

    def record(conn, cursor, statement, *args):
        isolation.append(conn.get_execution_options().get("isolation_level"))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get("/favorites", headers=customer.headers).status_code == 200
        assert client.get(f"/users/presence?user_ids={customer.id}",
                          headers=customer.headers).status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert isolation and set(isolation) == {"AUTOCOMMIT"}
    assert_pooled_connections_transactional(app)


def test_reads_on_postgresql_run_in_autocommit_and_leave_none_behind(
        postgres, app, client, customer, listener, monkeypatch):
    seen = []
    execute = psycopg.Cursor.execute

    def recording(cursor, query, params=None, **kwargs):
        seen.append((cursor.connection.autocommit, cursor.connection.info.transaction_status))
        return execute(cursor, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    listed = client.get("/favorites", headers=customer.headers)
    assert listed.status_code == 200
    assert listed.json["favorites"] == [] and listed.json["total_count"] == 0
    looked_up = client.get(f"/users/presence?user_ids={listener.id}", headers=customer.headers)
    assert looked_up.status_code == 200
    assert [found["user_id"] for found in looked_up.json] == [listener.id]
    monkeypatch.undo()
    assert seen and set(seen) == {(True, psycopg.pq.TransactionStatus.IDLE)}
    assert_pooled_connections_transactional(app)


def test_a_read_on_a_connection_the_server_dropped_is_a_503_then_recovers(
        postgres, app, client, customer, monkeypatch):
    assert client.get("/favorites", headers=customer.headers).status_code == 200
    # The connection goes away between checkout and query: no check could have seen it.
    monkeypatch.setattr("saathii.database.server_spoke_while_idle", lambda connection: False)
    terminate_other_sessions(postgres)
    response = client.get("/favorites", headers=customer.headers)
    assert response.status_code == 503
    assert response.json == {"detail": "Service temporarily unavailable, try again shortly"}
    assert client.get("/favorites", headers=customer.headers).status_code == 200


def test_a_read_when_no_connection_can_be_made_is_a_503(postgres, app, client, customer,
                                                        monkeypatch):
    with app.app_context():
        engine = db.engine

    def refused():
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(engine, "raw_connection", refused)
    response = client.get("/favorites", headers=customer.headers)
    assert response.status_code == 503
    assert response.json == {"detail": "Service temporarily unavailable, try again shortly"}
    monkeypatch.undo()
    assert client.get("/favorites", headers=customer.headers).status_code == 200
