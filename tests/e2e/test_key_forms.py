"""Key forms: every key a write accepts can be inspected and released through
/v1/idempotency/keys/{key}, whichever way the URL writes it; a key with a `.`
or `..` segment, which URLs rewrite, is refused on the write. And the
fingerprint: a raw body is never taken for a JSON one, nor for the same bytes
sent as another content type."""

import pytest

from conftest import Client, Server, assert_problem, unique

ROUTE = "route=/functions/v1/echo"


@pytest.fixture(scope="module")
def fronted(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo", UPSTREAM_KEY_POLICY="optional").start()
    yield s
    s.cleanup()


def call(client, body, key, content_type="application/json"):
    return client.server.request("POST", "/functions/v1/echo", body,
                                 client.headers(key, {"content-type": content_type}))


@pytest.mark.parametrize("key", [".", "..", "a/../b", "./a", "a/."])
def test_a_key_with_a_dot_segment_is_refused_and_nothing_runs(fronted, origin, key):
    c = Client(fronted, unique("dots"))
    before = origin.count("/echo")
    p = assert_problem(call(c, {"x": 1}, key), 400, "invalid-idempotency-key")
    assert '"." or ".."' in p["detail"] and "inspected or released" in p["detail"], p
    # Quoted (the sf-string form) it is the same key, refused the same way.
    assert_problem(call(c, {"x": 1}, f'"{key}"'), 400, "invalid-idempotency-key")
    assert origin.count("/echo") == before


LONG = ("a.b/c=d+e:f~g_h-" * 16)[:255]


@pytest.mark.parametrize("key,written", [
    ("a/b", "a/b"),
    ("a/b", "a%2Fb"),
    ("a+b", "a+b"),
    ("a+b", "a%2Bb"),
    ("a=b", "a%3Db"),
    ("==", "=="),
    ("a:b~c", "a:b~c"),
    (LONG, LONG),
    ("a/b/", "a/b/"),
    ("a/b/", "a%2Fb%2F"),
    ("...", "..."),
    ("...", "%2E%2E%2E"),
    ("/", "/"),
    ("/", "%2F"),
    ("//", "//"),
    ("/a", "/a"),
])
def test_a_written_key_is_found_and_released_at_its_url(fronted, origin, key, written):
    assert len(LONG) == 255
    c = Client(fronted, unique("forms"))
    before = origin.count("/echo")
    first = call(c, {"form": written}, key)
    assert first.status == 200, first
    assert first.json()["call"] == origin.count("/echo") == before + 1
    state = c.get(f"/v1/idempotency/keys/{written}?{ROUTE}")
    assert state.status == 200, state
    assert state.json()["state"] == "completed" and state.json()["response_status"] == 200
    released = c.delete(f"/v1/idempotency/keys/{written}?{ROUTE}")
    assert released.status == 204, released
    assert_problem(c.get(f"/v1/idempotency/keys/{written}?{ROUTE}"), 404)
    # Released: the same request under the key runs again.
    again = call(c, {"form": written}, key)
    assert again.status == 200 and again.header("idempotent-replayed") is None
    assert origin.count("/echo") == before + 2


def test_a_bad_escape_in_the_key_path_is_a_bad_url(fronted):
    c = Client(fronted, unique("esc"))
    for written in ["a%2", "a%zz", "%"]:
        assert_problem(c.get(f"/v1/idempotency/keys/{written}?{ROUTE}"), 400, "invalid-url")


def test_raw_bytes_equal_to_an_earlier_json_bodys_canonical_text_are_another_request(fronted, origin):
    c = Client(fronted, unique("fp"))
    before = origin.count("/echo")
    first = call(c, b'{"a":1}', "k-json-then-text")
    assert first.status == 200 and first.json()["content_type"] == "application/json"
    # The origin would get other bytes' reading, under text/plain: not a replay.
    assert_problem(call(c, b'{"a":1}', "k-json-then-text", "text/plain"), 422, "idempotency-key-reused")
    assert origin.count("/echo") == before + 1
    # The JSON body, spelled otherwise and under a JSON type with parameters, still replays.
    same = call(c, b'{ "a" : 1 }', "k-json-then-text", "application/json; charset=utf-8")
    assert same.status == 200 and same.header("idempotent-replayed") == "true"
    assert origin.count("/echo") == before + 1


def test_the_same_raw_bytes_under_another_content_type_are_another_request(fronted, origin):
    c = Client(fronted, unique("fp"))
    before = origin.count("/echo")
    first = call(c, b"hello", "k-raw-types", "text/plain")
    assert first.status == 200 and first.json()["content_type"] == "text/plain"
    for other in ["application/octet-stream", "text/plain; charset=utf-8"]:
        assert_problem(call(c, b"hello", "k-raw-types", other), 422, "idempotency-key-reused")
    assert origin.count("/echo") == before + 1
    # The media type is case-insensitive: written otherwise, it is the same request.
    for same in ["text/plain", "Text/Plain"]:
        r = call(c, b"hello", "k-raw-types", same)
        assert r.status == 200 and r.header("idempotent-replayed") == "true", r
        assert r.body == first.body
    assert origin.count("/echo") == before + 1
