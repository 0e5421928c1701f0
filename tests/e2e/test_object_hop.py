"""The Worker reaches a key's object by RPC (src/object_rpc.rs, through the
`KeyGate` class of src/entry.js). The object still answers the `fetch` form — the
envelope in a header, the call by method and path — which an older Worker version
sends during a gradual deployment. The test hook `x-idemgate-test-hop: fetch`
makes this Worker send it: both forms must reach the same slot of the same key,
per-key objects and sharded ones alike."""

import json
import threading
import time

import pytest

from conftest import Client, Server, assert_problem, unique

BY_FETCH = {"x-idemgate-test-hop": "fetch"}
ROUTE = "route=/functions/v1/{name}".replace("{name}", "echo")


@pytest.fixture(scope="module", params=["0", "4"], ids=["per-key", "sharded"])
def srv(request, origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,sleep", KEYGATE_SHARDS=request.param).start()
    yield s
    s.cleanup()


def call(c, name, key, body, extra=None):
    return c.server.request("POST", f"/functions/v1/{name}", body, c.headers(key, extra), timeout=60)


@pytest.mark.parametrize("first,then", [(BY_FETCH, {}), ({}, BY_FETCH)], ids=["fetch-then-rpc", "rpc-then-fetch"])
def test_both_forms_of_the_call_reach_the_same_slot(srv, origin, first, then):
    c = Client(srv, unique("hop"))
    runs = origin.count("/echo")
    r = call(c, "echo", "k-1", {"n": 1}, first)
    assert r.status == 200 and r.header("idempotent-replayed") is None, r
    assert origin.count("/echo") == runs + 1
    # The key's state, asked the other way, is the answer the first form stored.
    state = c.get(f"/v1/idempotency/keys/k-1?{ROUTE}", then)
    assert state.status == 200 and state.json()["state"] == "completed", state
    assert state.header("x-idemgate-envelope") is None and state.header("x-idemgate-outcome") is None
    # Released the other way: the next call (the first way) runs again.
    assert c.server.request("DELETE", f"/v1/idempotency/keys/k-1?{ROUTE}", None, c.headers(None, then)).status == 204
    assert c.get(f"/v1/idempotency/keys/k-1?{ROUTE}", first).status == 404
    again = call(c, "echo", "k-1", {"n": 1}, first)
    assert again.status == 200 and again.header("idempotent-replayed") is None, again
    assert origin.count("/echo") == runs + 2


def test_a_key_in_flight_by_one_form_is_in_flight_for_the_other(srv, origin):
    c = Client(srv, unique("hop-busy"))
    sleeps = origin.count("/sleep")
    out = {}
    slow = threading.Thread(target=lambda: out.setdefault("r", call(c, "sleep", "k-slow", {"seconds": 2})))
    slow.start()
    time.sleep(0.7)
    assert_problem(call(c, "sleep", "k-slow", {"seconds": 2}, BY_FETCH), 409, "idempotency-key-in-flight")
    # A waiter by `fetch` gets the one answer of the run started by RPC.
    waited = call(c, "sleep", "k-slow", {"seconds": 2}, {**BY_FETCH, "prefer": "wait=10"})
    slow.join()
    assert out["r"].status == 200 and waited.status == 200, (out["r"], waited)
    assert waited.body == out["r"].body and waited.header("idempotent-replayed") == "true"
    # Another payload under the key, by `fetch`: 422, nothing run.
    assert_problem(call(c, "sleep", "k-slow", {"seconds": 1}, BY_FETCH), 422, "idempotency-key-reused")
    assert origin.count("/sleep") == sleeps + 1


def test_the_fetch_form_carries_bodies_of_every_size(srv, origin):
    c = Client(srv, unique("hop-big"))
    for size in (0, 1, 64 * 1024, 900 * 1024):
        body = {"blob": "x" * size}
        by_fetch = call(c, "echo", f"k-{size}", body, BY_FETCH)
        by_rpc = call(c, "echo", f"k-rpc-{size}", body)
        assert by_fetch.status == by_rpc.status == 200, (size, by_fetch, by_rpc)
        # The origin echoes what it received (and counts its calls).
        assert by_fetch.json()["body"] == by_rpc.json()["body"], size
        assert json.loads(by_fetch.json()["body"]) == body, size


# A Durable Object RPC carries at most 32 MiB of serialised arguments or result
# (the runtime refuses more, locally too). A call whose command or answer is
# larger still reaches its object and comes back whole.
BIG_LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def roomy(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="big", MAX_BODY_BYTES=BIG_LIMIT).start()
    yield s
    s.cleanup()


def test_a_command_larger_than_an_rpc_may_carry_still_runs_once(roomy, origin):
    c = Client(roomy, unique("hop-huge-in"))
    runs = origin.count("/big")
    # 40 MB of padding the origin ignores (the command carries it base64: ~53 MB).
    body = {"bytes": 2000, "pad": "p" * (40 * 1024 * 1024)}
    r = call(c, "big", "k-in", body)
    assert r.status == 200, r
    assert len(r.body) == 2000
    assert origin.count("/big") == runs + 1
    assert len(origin.requests["/big"][-1][1]) == len(json.dumps(body))
    again = call(c, "big", "k-in", body)
    assert again.status == 200 and again.header("idempotent-replayed") == "true" and again.body == r.body
    assert origin.count("/big") == runs + 1


def test_an_answer_larger_than_an_rpc_may_carry_comes_back_whole(roomy, origin):
    c = Client(roomy, unique("hop-huge-out"))
    runs = origin.count("/big")
    # A 40 MB 503 from the origin: not stored, passed back as it is, the key released.
    asked = {"bytes": 40 * 1024 * 1024, "status": 503}
    r = call(c, "big", "k-out", asked)
    assert r.status == 503, r
    assert len(r.body) == asked["bytes"]
    assert json.loads(r.body)["pad"].startswith("xxx")
    again = call(c, "big", "k-out", asked)
    assert again.status == 503 and again.header("idempotent-replayed") is None
    assert origin.count("/big") == runs + 2
