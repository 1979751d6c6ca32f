"""Admission: past what a worker serves at once, the excess is refused with 503 at once
(or after a short bounded wait in turn); health probes and metrics never are."""
import json
import threading

import pytest

from saathii.admission import Admission, AdmissionMiddleware


def entering(admission, **kwargs):
    """Start enter() in a thread; return (thread, result holder)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(admission.enter(**kwargs)))
    thread.start()
    return thread, result


def wait_for_line(line, count):
    for _ in range(500):
        if len(line) == count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{len(line)} waiting, not {count}")


def wait_for_waiters(admission, count):
    wait_for_line(admission.waiting, count)


def test_slots_then_a_bounded_line_then_refusals():
    admission = Admission(max_active=2, max_waiting=1, max_wait_seconds=30,
                          yielding_wait_seconds=30)
    assert admission.enter() and admission.enter()
    waiter, admitted = entering(admission)
    wait_for_waiters(admission, 1)
    assert admission.enter() is False  # the line is full: refused at once
    admission.leave()  # the slot passes to the waiter, in turn
    waiter.join(5)
    assert admitted == [True]
    assert (admission.active, list(admission.waiting)) == (2, [])
    admission.leave()
    admission.leave()
    assert admission.active == 0


def test_a_wait_past_its_bound_is_refused_and_leaves_the_line():
    admission = Admission(max_active=1, max_waiting=5, max_wait_seconds=0.05,
                          yielding_wait_seconds=30)
    assert admission.enter()
    assert admission.enter() is False  # waited 50 ms, no slot came
    assert list(admission.waiting) == []
    admission.leave()
    assert admission.enter()  # the slot is free for the next


def test_waiters_are_admitted_in_arrival_order():
    admission = Admission(max_active=1, max_waiting=3, max_wait_seconds=30,
                          yielding_wait_seconds=30)
    assert admission.enter()
    order = []
    threads = []
    for name in "abc":
        thread = threading.Thread(target=lambda name=name: admission.enter() and
                                  order.append(name))
        thread.start()
        wait_for_waiters(admission, len(threads) + 1)
        threads.append(thread)
    for admitted, thread in enumerate(threads, 1):
        admission.leave()  # the slot goes to the longest waiter, and only to it
        thread.join(5)
        assert order == ["a", "b", "c"][:admitted]


def test_a_waiting_request_comes_before_a_waiting_socket_greeting():
    admission = Admission(max_active=2, max_waiting=1, max_wait_seconds=30,
                          yielding_wait_seconds=30)
    assert admission.enter() and admission.enter(yielding=True)
    greetings = [entering(admission, yielding=True) for _ in range(3)]  # no line limit
    wait_for_line(admission.yielding, 3)
    request, admitted = entering(admission)
    wait_for_waiters(admission, 1)
    admission.leave()  # the slot goes to the request, though the greetings came first
    request.join(5)
    assert admitted == [True] and len(admission.yielding) == 3
    for thread, result in greetings:
        admission.leave()  # then to the greetings, in their order
        thread.join(5)
        assert result == [True]
    assert admission.active == 2


def test_a_socket_greeting_that_waits_past_its_bound_is_refused():
    admission = Admission(max_active=1, max_waiting=1, max_wait_seconds=30,
                          yielding_wait_seconds=0.05)
    assert admission.enter()
    assert admission.enter(yielding=True) is False
    assert list(admission.yielding) == []


@pytest.fixture
def config(config):
    return type("TwoAtWork", (config,), {"ADMISSION_MAX_ACTIVE": 2,
                                         "ADMISSION_MAX_WAITING": 1,
                                         "ADMISSION_MAX_WAIT_SECONDS": 0.05})


def test_past_the_slots_and_the_line_requests_get_503_and_probes_still_answer(
        app, customer, listener):
    release = threading.Event()
    app.add_url_rule("/held", "held", lambda: (release.wait(10), {"held": True})[1])
    answers = []

    def call(path):
        answers.append(app.test_client().get(path, headers=customer.headers))

    held = [threading.Thread(target=call, args=("/held",)) for _ in range(2)]
    for thread in held:
        thread.start()
    admission = app.extensions["saathii_admission"]
    for _ in range(500):
        if admission.active == 2:
            break
        threading.Event().wait(0.01)
    client = app.test_client()
    refused = client.get(f"/users/{listener.id}/presence", headers=customer.headers)
    assert refused.status_code == 503
    assert refused.json == {"detail": "Server busy, try again shortly"}
    assert refused.headers["Retry-After"] in {"1", "2", "3"}
    assert len(refused.headers["X-Request-ID"]) == 32
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert 'saathii_requests_shed_total{kind="request"} 1.0' in client.get("/metrics").text
    release.set()
    for thread in held:
        thread.join(10)
    assert [(answer.status_code, answer.json) for answer in answers] == [
        (200, {"held": True})] * 2
    answer = client.get(f"/users/{listener.id}/presence", headers=customer.headers)
    assert answer.status_code == 200
    assert answer.json["user_id"] == listener.id


def test_a_full_line_turns_requests_away_below_flask_and_never_probes():
    admission = Admission(max_active=1, max_waiting=1, max_wait_seconds=30,
                          yielding_wait_seconds=30)
    seen = []
    middleware = AdmissionMiddleware(lambda environ, start: seen.append(environ) or [b"{}"],
                                     admission, pause_seconds=0.01)
    answers = []

    def call(path):
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        body = middleware(environ, lambda status, headers: answers.append(
            (status, dict(headers))))
        return environ, b"".join(body), body

    assert admission.enter()
    assert call("/favorites")[1] == b"{}"  # a free place in line: on to Flask
    waiter, _ = entering(admission)
    wait_for_waiters(admission, 1)
    environ, body, response = call("/favorites")
    response.close()  # the server's close: the pause before the next read
    assert json.loads(body) == {"detail": "Server busy, try again shortly"}
    status, headers = answers[-1]
    assert status == "503 Service Unavailable"
    assert headers["Retry-After"] in {"1", "2", "3"}
    assert headers["Content-Type"] == "application/json"
    assert environ["saathii.shed"] is True  # out of the access log
    assert [call(path)[1] for path in ("/healthz", "/readyz", "/metrics")] == [b"{}"] * 3
    admission.leave()
    waiter.join(5)
    admission.leave()


def test_a_caller_back_sooner_than_told_takes_a_free_slot_but_no_place_in_line():
    admission = Admission(max_active=1, max_waiting=5, max_wait_seconds=30,
                          yielding_wait_seconds=30)
    assert not admission.refused_lately("Bearer impatient")
    admission.remember_refusal("Bearer impatient")
    assert admission.refused_lately("Bearer impatient")
    assert not admission.refused_lately("Bearer patient")
    assert admission.enter(may_wait=False)  # a free slot: taken
    assert admission.enter(may_wait=False) is False  # no slot: refused, no wait
    assert admission.turn_away(may_wait=False)  # and refused below Flask too
    assert not admission.turn_away(may_wait=True)  # the line has room for the patient
    admission.leave()
