"""Concurrent favorite changes: one row for fifty simultaneous adds, and a storm of adds
and removes that ends exactly where each user's last request left it."""
import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from saathii.extensions import db
from saathii.models import Favorite


def test_fifty_simultaneous_adds_make_one_row(app, customer, listener, events):
    barrier = threading.Barrier(50)

    def add(_):
        client = app.test_client()
        barrier.wait()
        return client.post("/favorites/add", json={"listener_id": listener.id},
                           headers=customer.headers)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(add, range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    messages = sorted(r.json["message"] for r in responses)
    assert messages == ["Already favorited jane_smith"] * 49 + [
        "Successfully added jane_smith to favorites"]
    assert all(r.json["is_favorited"] for r in responses)
    with app.app_context():
        rows = db.session.scalar(sa.select(sa.func.count()).select_from(Favorite))
    assert rows == 1
    assert [e.type for e in events] == ["favorite_added"]


def test_a_storm_of_adds_and_removes_ends_in_the_last_writes_state(app, make_user, events):
    listeners = [make_user(f"listener_{n}", "listener") for n in range(5)]
    customers = [make_user(f"customer_{n}", "customer") for n in range(16)]
    last = {}

    def storm(index):
        """One user's requests, in order; many users at once on the same listeners."""
        client, who = app.test_client(), customers[index]
        rng = random.Random(index)
        codes = []
        for _ in range(25):
            target = rng.choice(listeners)
            adding = rng.random() < 0.6
            response = (client.post if adding else client.delete)(
                "/favorites/add" if adding else "/favorites/remove",
                json={"listener_id": target.id}, headers=who.headers)
            codes.append(response.status_code)
            last[(who.id, target.id)] = adding
            assert response.json["is_favorited"] is adding
        return codes

    with ThreadPoolExecutor(max_workers=len(customers)) as pool:
        codes = [code for result in pool.map(storm, range(len(customers))) for code in result]
    assert set(codes) == {200}
    expected = {pair for pair, favorited in last.items() if favorited}
    with app.app_context():
        rows = set(db.session.execute(sa.select(Favorite.user_id, Favorite.listener_id)))
    assert rows == expected
    # Every real change was announced once: per pair, events alternate added/removed and
    # end where the rows are.
    per_pair = defaultdict(list)
    for event in events:
        per_pair[(event.data["user_id"], event.subject_id)].append(event.type)
    for pair, kinds in per_pair.items():
        assert all(a != b for a, b in zip(kinds, kinds[1:])), (pair, kinds)
        assert kinds[0] == "favorite_added"
        assert (kinds[-1] == "favorite_added") == (pair in expected)
    assert set(per_pair) >= expected
