"""bench/checker.py run as a test: the Procfile's web (2 workers) and clock processes on
PostgreSQL, through each relay, with concurrent writers, reconnecting sockets, a relay
pause and a worker killed; every view converges to the truth (see its docstring)."""
import os
import sys

import pytest
from sqlalchemy.engine import make_url

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import checker  # noqa: E402 - bench/ on the path first


@pytest.mark.parametrize("relay", ["postgresql", "redis"])
def test_every_view_converges_through_faults(config, redis_url, relay, capsys):
    url = make_url(config.SQLALCHEMY_DATABASE_URI)
    if url.get_backend_name() != "postgresql":
        pytest.skip("the checker runs the Procfile's processes on PostgreSQL")
    database = url.set(drivername="postgresql", database="saathii_bench_checker_test")
    code = checker.main(["--seconds", "9", "--relay", relay, "--redis-url", redis_url,
                         "--database-url", database.render_as_string(hide_password=False)])
    result = capsys.readouterr().out
    assert code == 0, result
    assert '"failures": []' in result
