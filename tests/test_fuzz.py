"""Schemathesis against the service's own /openapi.json: every operation, authenticated,
with a fixed seed and a bounded number of examples. No server error, and every response
conforms to the documented schema, status codes, headers and content types."""
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from saathii.openapi import build_spec

schema = schemathesis.pytest.from_fixture("api_schema")
CALLER = {}
STATUSES = {}


@schemathesis.auth()
class CallerToken:
    """Authenticates every generated request as the fuzz caller (negative cases that drop
    the header on purpose stay unauthenticated)."""

    def get(self, case, context):
        return CALLER["token"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture
def api_schema(app, make_user):
    """The app's schema, with a customer to act as and a few listeners for the generated
    ids to find. The caller's id is one no generated id will hit: favoriting yourself is
    refused (400) by a rule that depends on who asks, which no schema can say."""
    for n in range(3):
        make_user(f"listener_{n}", "listener")  # ids 1 to 3
    CALLER["token"] = make_user("fuzzer", "customer", id=7_340_032_017).token
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=150, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api(case):
    response = case.call_and_validate()
    STATUSES.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)


def test_the_fuzzing_got_past_authentication(app):
    """Guards the test above: each documented operation was answered 2xx at least once
    (schemathesis also tries undocumented methods, which get 405)."""
    spec = build_spec(app)["paths"]
    operations = {f"{method.upper()} {path}" for path in spec for method in spec[path]}
    documented = {op: codes for op, codes in STATUSES.items() if op in operations}
    assert len(documented) == len(operations) == 12
    assert {op: codes for op, codes in documented.items()
            if not any(200 <= code < 300 for code in codes)} == {}
