"""bench/checker.py run as a test: the Procfile's web (2 workers) and clock processes on
PostgreSQL, through each relay, or one web worker on SQLite; concurrent writers,
reconnecting sockets, a relay pause and a worker killed: every view converges to the
truth (see its docstring)."""
import os
import sys

import pytest
from sqlalchemy.engine import make_url

from .processes import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import checker  # noqa: E402 - bench/ on the path first


@pytest.mark.parametrize("relay", ["postgresql", "redis", "none"])
def test_every_view_converges_through_faults(config, redis_url, relay, capsys, tmp_path):
    url = make_url(config.SQLALCHEMY_DATABASE_URI)
    on_postgresql = url.get_backend_name() == "postgresql"
    if on_postgresql == (relay == "none"):
        pytest.skip("relays on PostgreSQL; none on SQLite (one worker)")
    database = (url.set(drivername="postgresql", database="saathii_bench_checker_test")
                .render_as_string(hide_password=False) if on_postgresql
                else f"sqlite:///{tmp_path / 'checker.db'}")
    code = checker.main(["--seconds", "9", "--relay", relay, "--redis-url", redis_url,
                         "--database-url", database])
    result = capsys.readouterr().out
    assert code == 0, result
    assert '"failures": []' in result
