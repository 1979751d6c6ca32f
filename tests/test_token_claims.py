"""Token claims a real auth service produces, and ones it must never be trusted with."""
import time

import pytest

from .conftest import in_future


def status_of(client, token):
    response = client.get("/both/status/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_json()


@pytest.mark.parametrize("claim", ["iat", "nbf"])
def test_a_token_from_a_slightly_fast_clock_works(client, token_for, customer, claim):
    token = token_for({"sub": str(customer.id), "exp": in_future(), claim: time.time() + 20})
    status, body = status_of(client, token)
    assert (status, body["user_id"]) == (200, customer.id)


def test_no_leeway_on_expiry_or_beyond_the_skew(client, token_for, customer):
    expired = token_for({"sub": str(customer.id), "exp": int(time.time()) - 5})
    too_early = token_for({"sub": str(customer.id), "exp": in_future(),
                           "nbf": time.time() + 120})
    for token in (expired, too_early):
        assert status_of(client, token) == (401, {"detail": "Invalid or expired token"})


def test_a_non_numeric_exp_and_a_padded_sub_are_refused(client, token_for, customer):
    text_exp = token_for({"sub": str(customer.id), "exp": str(int(time.time()) + 3600)})
    padded_sub = token_for({"sub": f"00{customer.id}", "exp": in_future()})
    for token in (text_exp, padded_sub):
        assert status_of(client, token) == (401, {"detail": "Invalid or expired token"})
