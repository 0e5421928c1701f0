"""Fronting origin functions: POST /functions/v1/{name} under the contract (docs/contract.md)."""

import time

import pytest

from conftest import Client, Server, assert_problem, concurrently, forwarded_key, scope_of, unique


@pytest.fixture(scope="module")
def fronted(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,reject,flaky,slow,bodiless,big",
               UPSTREAM_TIMEOUT_MS=1000, TRAINER_URL=f"{origin.url}/trainer").start()
    yield s
    s.cleanup()


def call(client, name, body, key=None, extra=None, timeout=60):
    return client.server.request("POST", f"/functions/v1/{name}", body, client.headers(key, extra), timeout=timeout)


def test_50_sequential_retries_reach_the_origin_once(fronted, origin):
    c = Client(fronted, unique("fn"))
    before = origin.count("/echo")
    body = {"order": unique("o"), "amount": 10}
    replies = [call(c, "echo", body, "k-seq") for _ in range(50)]
    assert origin.count("/echo") == before + 1
    assert {r.status for r in replies} == {200}
    assert len({r.body for r in replies}) == 1
    assert all(r.header("idempotent-replayed") == "true" for r in replies[1:])
    assert all(r.header("x-origin-call") == replies[0].header("x-origin-call") for r in replies)
    assert all(r.header("set-cookie") is None for r in replies)
    assert replies[1].header("etag") == replies[0].header("etag")


def test_50_concurrent_retries_reach_the_origin_once(fronted, origin):
    c = Client(fronted, unique("fn"))
    before = origin.count("/echo")
    body = {"order": unique("o")}
    replies = concurrently(50, lambda i: call(c, "echo", body, "k-conc", {"prefer": "wait=10"}))
    assert origin.count("/echo") == before + 1
    assert {r.status for r in replies} == {200}
    assert len({r.body for r in replies}) == 1


def test_origin_receives_body_content_type_authorization_and_key(fronted, origin):
    c = Client(fronted, unique("fn"))
    r = call(c, "echo", '{"x": 1}', "k-forward")
    got = r.json()
    assert got["body"] == '{"x": 1}'
    # Never the raw client key: one derived from the whole scope (docs/contract.md, "Headers").
    assert got["key"] == forwarded_key(scope_of(c.tenant, c.sub), "POST /functions/v1/echo", "k-forward")
    assert got["content_type"] == "application/json"
    assert got["authorization"] == f"Bearer {c.token}"


def test_origin_500_is_not_stored_and_the_retry_runs_and_is_stored(fronted, origin):
    c = Client(fronted, unique("fn"))
    before = origin.count("/flaky")
    first = call(c, "flaky", {"n": 1}, "k-flaky")
    assert first.status == 500
    second = call(c, "flaky", {"n": 1}, "k-flaky")
    assert second.status == 201 and second.header("idempotent-replayed") is None
    third = call(c, "flaky", {"n": 1}, "k-flaky")
    assert third.status == 201 and third.header("idempotent-replayed") == "true"
    assert third.body == second.body
    assert origin.count("/flaky") == before + 2


def test_origin_4xx_is_stored_and_replayed(fronted, origin):
    c = Client(fronted, unique("fn"))
    before = origin.count("/reject")
    a = call(c, "reject", {"bad": True}, "k-4xx")
    b = call(c, "reject", {"bad": True}, "k-4xx")
    assert a.status == b.status == 422
    assert b.header("idempotent-replayed") == "true" and b.body == a.body
    assert origin.count("/reject") == before + 1


def test_origin_timeout_is_504_and_not_stored(fronted, origin):
    c = Client(fronted, unique("fn"))
    before = origin.count("/slow")
    r = call(c, "slow", {}, "k-slow")
    assert_problem(r, 504, "upstream-timeout")
    assert fronted.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'") == 0
    r2 = call(c, "slow", {}, "k-slow")
    assert r2.status == 504
    assert origin.count("/slow") == before + 2


def test_unreachable_origin_is_502_and_releases_the_key(fronted, origin):
    c = Client(fronted, unique("fn"))
    port = origin.port
    origin.stop()
    try:
        r = call(c, "echo", {"a": 1}, "k-down")
        assert_problem(r, 502, "upstream-unreachable")
    finally:
        origin.start(port)
    r = call(c, "echo", {"a": 1}, "k-down")
    assert r.status == 200 and r.header("idempotent-replayed") is None


@pytest.mark.parametrize("status", [101, 199, 600, 999])
def test_an_origin_status_no_answer_can_carry_is_502_and_releases_the_key(fronted, origin, status):
    # A final answer's status is 200-599: 1xx is never final, and 600 and up is
    # no HTTP status. An origin that answers one is a bad gateway: nothing is
    # stored, the key is released, and the Worker keeps serving. (The Worker
    # answered 503 "storage unavailable" for 600 and 999, and hung until the
    # runtime cancelled it for 101 and 199.)
    c = Client(fronted, unique("fn"))
    before = origin.count("/big")
    body = {"status": status, "bytes": 50}
    for runs in (1, 2):
        assert_problem(call(c, "big", body, "k-odd", timeout=30), 502, "upstream-unreachable")
        assert origin.count("/big") == before + runs
    assert call(c, "echo", {"a": 1}, "k-after").status == 200


def test_unknown_function_is_404_and_a_key_is_required(fronted):
    c = Client(fronted, unique("fn"))
    assert_problem(call(c, "nope", {}, "k"), 404)
    assert_problem(call(c, "echo", {}), 400, "idempotency-key-required")


def test_same_key_on_two_functions_is_independent(fronted, origin):
    c = Client(fronted, unique("fn"))
    a = call(c, "echo", {"same": 1}, "k-two-routes")
    b = call(c, "reject", {"same": 1}, "k-two-routes")
    assert a.status == 200 and b.status == 422
    assert b.header("idempotent-replayed") is None


def test_optional_policy_passes_keyless_requests_straight_through(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo", UPSTREAM_KEY_POLICY="optional").start()
    try:
        c = Client(s, unique("pass"))
        before = origin.count("/echo")
        replies = [call(c, "echo", {"x": 1}) for _ in range(3)]
        assert origin.count("/echo") == before + 3
        assert all(r.status == 200 and r.header("idempotent-replayed") is None for r in replies)
        assert all(r.header("idempotency-key") is None for r in replies)
        assert s.d1_value("SELECT count(*) FROM idempotency_records") == 0
        # With a key, the same route is idempotent.
        keyed = [call(c, "echo", {"x": 1}, "k-opt") for _ in range(3)]
        assert origin.count("/echo") == before + 4
        assert keyed[2].header("idempotent-replayed") == "true"
    finally:
        s.cleanup()


def test_an_origin_answer_reaches_d1_after_the_reply_and_a_release_forgets_it(fronted, origin):
    c = Client(fronted, unique("fn"))
    before = origin.count("/echo")
    first = call(c, "echo", {"wb": 1}, "k-wb")
    assert call(c, "echo", {"wb": 1}, "k-wb").header("idempotent-replayed") == "true"
    # The answer is final in the key's object at once; its D1 record follows.
    deadline = time.time() + 10
    while fronted.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'") != 1:
        assert time.time() < deadline
        time.sleep(0.3)
    assert c.delete("/v1/idempotency/keys/k-wb?route=/functions/v1/echo").status == 204
    again = call(c, "echo", {"wb": 1}, "k-wb")
    assert again.status == 200 and again.header("idempotent-replayed") is None
    assert again.header("x-origin-call") != first.header("x-origin-call")
    assert origin.count("/echo") == before + 2


@pytest.mark.parametrize("status", [204, 205])
def test_an_answer_with_a_status_that_has_no_body_is_kept_and_replayed(fronted, origin, status):
    # 204 and 205 may carry no body: the runtime refuses to build one with even
    # an empty body, so the answer, its replay and the key's state must not.
    c = Client(fronted, unique("fn"))
    before = origin.count("/bodiless")
    replies = [call(c, "bodiless", {"status": status}, f"k-bodiless-{status}") for _ in range(3)]
    assert [r.status for r in replies] == [status] * 3, replies
    assert all(r.body == b"" for r in replies), replies
    assert origin.count("/bodiless") == before + 1
    assert [r.header("idempotent-replayed") for r in replies] == [None, "true", "true"]
    assert len({r.header("x-origin-call") for r in replies}) == 1
    assert all(r.header("x-request-id") for r in replies)
    # The key's state still reads (it holds the stored answer's status).
    state = c.get(f"/v1/idempotency/keys/k-bodiless-{status}?route=/functions/v1/bodiless")
    assert state.status == 200, state
    assert state.json()["state"] == "completed" and state.json()["response_status"] == status, state
    # And the isolate still serves.
    assert call(c, "echo", {"after": status}, f"k-after-{status}").status == 200
