"""Replays, as the key's object answers them: the same answer for a caller's
every token (whether the isolate has verified it before or not), the same
refusals for another payload, the body limit before anything else, and JSON
matched by its canonical form while the same bytes sent as text are another
payload."""

import json
import re

import pytest

from conftest import SECRET, Client, Server, assert_problem, make_token, raw_post, text_doc, unique

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo", MAX_BODY_BYTES=LIMIT).start()
    yield s
    s.cleanup()


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
def test_a_replay_is_the_same_for_a_new_token_and_a_remembered_one(srv, origin, case):
    method, path, body = CASES[case]
    c = Client(srv, unique("quick"))
    first = call(c, method, path, body, "k-1")
    assert first.status in (200, 201), first.body
    runs = origin.count("/echo")
    # A token not yet verified here, then the same token, now remembered.
    other = second_token(c)
    guarded = call(other, method, path, body, "k-1")
    quick = call(other, method, path, body, "k-1")
    assert guarded.header("idempotent-replayed") == "true"
    assert seen(quick) == seen(guarded)
    assert quick.body == first.body
    assert quick.header("x-request-id") not in (None, guarded.header("x-request-id"))
    assert origin.count("/echo") == runs


def test_another_payload_is_refused_alike_for_a_new_token_and_a_remembered_one(srv):
    c = Client(srv, unique("quick-422"))
    assert call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1").status == 200
    other = second_token(c)
    guarded = call(other, "POST", "/functions/v1/echo", {"a": 2}, "k-1")
    quick = call(other, "POST", "/functions/v1/echo", {"a": 2}, "k-1")
    assert_problem(quick, 422)
    assert seen(quick) == seen(guarded)


def test_the_same_json_spelled_otherwise_is_still_a_replay(srv, origin):
    c = Client(srv, unique("quick-json"))
    first = srv.request("POST", "/functions/v1/echo", '{"a": 1, "b": [1, 2]}', c.headers("k-1"))
    assert first.status == 200
    runs = origin.count("/echo")
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
    assert origin.count("/echo") == runs


def test_a_body_over_the_limit_is_refused_on_an_answered_key_declared_or_not(srv, origin):
    c = Client(srv, unique("quick-413"))
    assert call(c, "POST", "/functions/v1/echo", {"a": 1}, "k-1").status == 200
    runs = origin.count("/echo")
    big = json.dumps({"a": "x" * LIMIT}).encode()
    status, _, body = raw_post(srv, "/functions/v1/echo", c.headers("k-1"), body=big)
    assert status == 413, body
    # Chunked: no length to refuse it by, so it is read, then refused.
    status, _, body = raw_post(srv, "/functions/v1/echo", c.headers("k-1"),
                            chunks=[big[i:i + 8192] for i in range(0, len(big), 8192)])
    assert status == 413, body
    # A chunked body within the limit is a replay.
    small = json.dumps({"a": 1}).encode()
    status, _, body = raw_post(srv, "/functions/v1/echo", c.headers("k-1"), chunks=[small[:3], small[3:]])
    assert status == 200, body
    assert origin.count("/echo") == runs
