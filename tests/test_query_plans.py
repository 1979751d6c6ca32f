"""The plans PostgreSQL chooses for the hot statements that find users by id, on
statistics from a time when few users were online (autovacuum not yet run, or off): the
primary key, never a scan of the partial index of online users (BENCHMARKS.md, "Measured
again")."""
import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from saathii.clock import clock
from saathii.domain import beats, held_sockets
from saathii.extensions import db

USERS = 3000
FIRST_ID = 100_000


@pytest.fixture
def stale_statistics(app, config):
    """USERS users analyzed while offline, then all brought online without an ANALYZE:
    PostgreSQL believes the partial index of online users is empty."""
    if not config.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
        pytest.skip("query plans: PostgreSQL only (TEST_DATABASE_URL)")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [{"id": FIRST_ID + n, "name": f"plan_{n}", "now": now} for n in range(USERS)]
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(sa.text(
                "insert into users (id, username, role, is_active, interests, created_at) "
                "values (:id, :name, 'listener', true, '[]', :now)"), rows)
            conn.execute(sa.text(
                "insert into user_status (user_id, is_online, is_busy, last_seen, "
                "created_at, updated_at, version) values (:id, false, false, :now, :now, "
                ":now, 1)"), rows)
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # An automatic ANALYZE between this and the EXPLAIN would make it pass
            # vacuously where autovacuum runs (the schema is made afresh for each test).
            conn.execute(sa.text("alter table user_status set (autovacuum_enabled = false)"))
            conn.execute(sa.text("analyze users"))
            conn.execute(sa.text("analyze user_status"))
        with db.engine.begin() as conn:
            conn.execute(sa.text("update user_status set is_online = true"))
    return [FIRST_ID + USERS // 2]


def indexes_used(app, statement, params):
    """The indexes of user_status (pk_user_status, ix_user_status_*) a statement's plan
    reads."""
    with app.app_context():
        compiled = statement.compile(dialect=db.engine.dialect)
        raw = db.engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + compiled.string,
                               {**compiled.params, **params})
                plan = cursor.fetchone()[0]
        finally:
            raw.close()
    found = set()

    def walk(node):  # an index scan names its table; a bitmap index scan only its index
        if "user_status" in node.get("Index Name", ""):
            found.add(node["Index Name"])
        for child in node.get("Plans", ()):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return found


@pytest.mark.parametrize("statement", ["free beats", "beats", "unheld online"])
def test_users_found_by_id_go_through_the_primary_key(app, stale_statistics, statement):
    now = clock.now().replace(tzinfo=None)
    built, params = {
        "free beats": (beats._free_beats_statement, {"ids": stale_statistics, "now": now}),
        "beats": (beats._beats_statement, {"ids": stale_statistics, "now": now}),
        "unheld online": (held_sockets._unheld_online_statement,
                          {"ids": stale_statistics, "now": now}),
    }[statement]
    with app.app_context():
        compiled_statement = built()
    assert indexes_used(app, compiled_statement, params) == {"pk_user_status"}
