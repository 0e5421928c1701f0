"""The quick replay (frontend_worker::ReadAhead): a keyed write whose key this
isolate's replay cache holds, from a caller whose token it has verified before,
has its body read by JavaScript and is answered by one call into the wasm,
outside the guarded path. A client sees no difference: the same answer as the
guarded path gives, the same refusals, and a panic there still answers 500
problem+json with its request id.

A caller's first token is not remembered until the guarded path has verified
it, so a second token for the same subject makes the guarded path answer a
replay the quick path then answers again: the two answers are compared."""

import json
import re

import pytest

from conftest import SECRET, Client, Server, assert_problem, logged_requests, make_token, raw_post, text_doc, unique

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo", MAX_BODY_BYTES=LIMIT).start()
    yield s
    s.cleanup()


def quick_replays(srv):
    """Replays the Worker answered by its quick path (test hook)."""
    reply = srv.request("GET", "/__test/quick-passes")
    assert reply.status == 200, reply.body
    return reply.json()["replays"]


def second_token(c):
    """Another token for the same caller (another expiry: another string)."""
    other = Client(c.server, c.sub, c.tenant)
    other.token = make_token(SECRET, c.sub, c.tenant, ttl=7200)
    assert other.token != c.token
    return other


def seen(reply):
    """What a client sees, but the request's own id and the phases' durations."""
    headers = {k: v for k, v in reply.headers.items() if k not in ("x-request-id", "date")}
    timing = headers.pop("server-timing", "")
    headers["server-timing"] = re.sub(r"dur=[0-9.]+", "dur=*", timing)
    return reply.status, headers, reply.body


def call(c, method, path, body, key, extra=None):
    return c.server.request(method, path, body, c.headers(key, extra))


CASES = {
    "origin function": ("POST", "/functions/v1/echo", {"order": 7, "amount": "1.00"}),
    "document": ("POST", "/v1/documents", text_doc("quick replay")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_replay_by_the_quick_path_is_the_guarded_paths_replay(srv, origin, case):
    method, path, body = CASES[case]
    c = Client(srv, unique("quick"))
    first = call(c, method, path, body, "k-1")
    assert first.status in (200, 201), first.body
    runs = origin.count("/echo")
    # The guarded path: a token not yet verified here (the key is cached).
    other = second_token(c)
    before = quick_replays(srv)
    guarded = call(other, method, path, body, "k-1")
    assert quick_replays(srv) == before
    # The quick path: that token, now remembered.
    quick = call(other, method, path, body, "k-1")
    assert quick_replays(srv) == before + 1
    assert guarded.header("idempotent-replayed") == "true"
    assert seen(quick) == seen(guarded)
    assert quick.body == first.body
    assert quick.header("x-request-id") not in (None, guarded.header("x-request-id"))
    assert origin.count("/echo") == runs


def test_the_quick_path_refuses_another_payload_as_the_guarded_path_does(srv):
    c = Client(srv, unique("quick-422"))
    assert call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1").status == 200
    other = second_token(c)
    guarded = call(other, "POST", "/functions/v1/echo", {"a": 2}, "k-1")
    before = quick_replays(srv)
    quick = call(other, "POST", "/functions/v1/echo", {"a": 2}, "k-1")
    assert quick_replays(srv) == before + 1
    assert_problem(quick, 422)
    assert seen(quick) == seen(guarded)


def test_the_same_json_spelled_otherwise_is_still_a_replay(srv, origin):
    # The replay cache knows the fingerprint of the bytes the answer's request
    # sent; other bytes are fingerprinted as ever (canonical JSON).
    c = Client(srv, unique("quick-json"))
    first = srv.request("POST", "/functions/v1/echo", '{"a": 1, "b": [1, 2]}', c.headers("k-1"))
    assert first.status == 200
    runs = origin.count("/echo")
    before = quick_replays(srv)
    for spelled in ('{"b":[1,2],"a":1}', '{ "a" : 1 , "b" : [ 1 , 2 ] }', '{"a": 1, "b": [1, 2]}'):
        again = srv.request("POST", "/functions/v1/echo", spelled, c.headers("k-1"))
        assert again.status == 200, (spelled, again.body)
        assert again.header("idempotent-replayed") == "true"
        assert again.body == first.body
    other = srv.request("POST", "/functions/v1/echo", '{"a": 1, "b": [2, 1]}', c.headers("k-1"))
    assert_problem(other, 422)
    # Sent as text, the same bytes are another request.
    as_text = srv.request("POST", "/functions/v1/echo", '{"a": 1, "b": [1, 2]}',
                          c.headers("k-1", {"content-type": "text/plain"}))
    assert_problem(as_text, 422)
    assert quick_replays(srv) == before + 5
    assert origin.count("/echo") == runs


def test_a_body_over_the_limit_is_refused_on_a_cached_key_declared_or_not(srv, origin):
    c = Client(srv, unique("quick-413"))
    assert call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1").status == 200
    runs = origin.count("/echo")
    big = json.dumps({"a": "x" * LIMIT}).encode()
    before = quick_replays(srv)
    status, _, body = raw_post(srv, "/functions/v1/echo", c.headers("k-1"), body=big)
    assert status == 413, body
    # Chunked: no length to refuse it by, so it is read, then refused.
    status, _, body = raw_post(srv, "/functions/v1/echo", c.headers("k-1"),
                            chunks=[big[i:i + 8192] for i in range(0, len(big), 8192)])
    assert status == 413, body
    assert quick_replays(srv) == before
    # A chunked body within the limit is a replay, by the quick path.
    small = json.dumps({"a": 1}).encode()
    status, _, body = raw_post(srv, "/functions/v1/echo", c.headers("k-1"), chunks=[small[:3], small[3:]])
    assert status == 200, body
    assert quick_replays(srv) == before + 1
    assert origin.count("/echo") == runs


def test_a_panic_in_the_quick_path_answers_500_and_the_worker_keeps_serving(srv, origin):
    c = Client(srv, unique("quick-panic"))
    first = call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1")
    assert first.status == 200
    runs = origin.count("/echo")
    assert call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1").status == 200
    panic = call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1", {"x-idemgate-test-fail": "replay-panic"})
    assert_problem(panic, 500, "internal")
    request_id = panic.header("x-request-id")
    assert request_id
    # Its log line, printed by the JavaScript that answered.
    lines = [l for l in logged_requests(srv, [request_id]) if l.get("request_id") == request_id]
    assert len(lines) == 1, lines
    assert lines[0]["outcome"] == "error" and lines[0]["status"] == 500
    assert lines[0]["route"] == "POST /functions/v1/{name}"
    # The instance died with its cache: the key's object answers the replay.
    again = call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1")
    assert again.status == 200, again.body
    assert again.header("idempotent-replayed") == "true"
    assert again.body == first.body
    assert origin.count("/echo") == runs
    assert srv.request("GET", "/healthz").status == 200
