"""A call without a key under `UPSTREAM_KEY_POLICY=optional` goes straight through
to the origin: nothing stored, so nothing held. A body whose length is declared
within MAX_BODY_BYTES streams on to the origin unread; one with no declared length
is read first, so that the limit holds. The origin's answer streams back to the
client whatever its size. UPSTREAM_TIMEOUT_MS bounds the wait for the answer's
headers (504); a keyed call's answer, read whole, is bounded whole."""

import http.client
import socket
import json
import re
import time

import pytest

from conftest import Client, Server, assert_problem, free_port, raw_post, unique

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,big,slow,stall,bodiless", UPSTREAM_KEY_POLICY="optional",
               MAX_BODY_BYTES=LIMIT, UPSTREAM_TIMEOUT_MS=1000).start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def roomy(origin):
    """The same, with time to spare for the origin's headers: a 24 MiB answer is
    built whole before its headers go out, which on a loaded machine can take
    longer than the 1 s the slow-origin tests need."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="big", UPSTREAM_KEY_POLICY="optional",
               MAX_BODY_BYTES=LIMIT, UPSTREAM_TIMEOUT_MS=60000).start()
    yield s
    s.cleanup()


def last_request(origin, path):
    return origin.requests[path][-1]


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, LIMIT - 200])
def test_a_declared_body_streams_to_the_origin_intact(srv, origin, size):
    c = Client(srv, unique("pass"))
    runs = origin.count("/echo")
    payload = json.dumps({"blob": "y" * size})[: max(size, 2)].encode() if size else b""
    headers = {**c.headers(), "content-type": "application/json"}
    status, h, body = raw_post(srv, "/functions/v1/echo", headers, body=payload)
    assert status == 200, body
    assert origin.count("/echo") == runs + 1
    sent_headers, received = last_request(origin, "/echo")
    assert received == payload
    # Sent with its length, as it came (an origin need not speak chunked).
    assert sent_headers.get("content-length", "0") == str(len(payload))
    assert sent_headers.get("authorization") == headers["authorization"]
    assert sent_headers.get("content-type") == "application/json"
    answer = json.loads(body)
    assert answer["body"] == payload.decode()
    # The origin's own headers come back; nothing of the idempotency layer's.
    assert h.get("x-origin-call") and h.get("idempotent-replayed") is None and h.get("idempotency-key") is None


def test_a_body_without_a_declared_length_is_read_then_limited(srv, origin):
    c = Client(srv, unique("pass-chunked"))
    runs = origin.count("/echo")
    headers = {**c.headers(), "content-type": "application/json"}
    small = [b'{"part": ', b'"one"', b"}"]
    status, _, body = raw_post(srv, "/functions/v1/echo", headers, chunks=small)
    assert status == 200, body
    assert last_request(origin, "/echo")[1] == b"".join(small)
    # Over the limit in chunks: refused before the origin sees anything.
    big = [b"z" * 65536] * (LIMIT // 65536 + 1)
    status, h, body = raw_post(srv, "/functions/v1/echo", headers, chunks=big)
    assert status == 413, body
    assert h["content-type"] == "application/problem+json"
    # Declared over the limit: the same.
    status, _, body = raw_post(srv, "/functions/v1/echo", headers, body=b"z" * (LIMIT + 1))
    assert status == 413, body
    assert origin.count("/echo") == runs + 1


@pytest.mark.parametrize("size", [3 * 1024 * 1024, 24 * 1024 * 1024])
def test_an_answer_of_any_size_streams_back_whole(roomy, origin, size):
    c = Client(roomy, unique("pass-big"))
    status, h, body = raw_post(roomy, "/functions/v1/big", {**c.headers(), "content-type": "application/json"},
                               body=json.dumps({"bytes": size}).encode(), timeout=120)
    assert status == 200, body[:300]
    assert len(body) == size
    assert json.loads(body)["pad"] == "x" * len(json.loads(body)["pad"])
    assert h.get("content-type", "").startswith("application/json")


@pytest.mark.parametrize("status", [204, 205])
def test_an_answer_with_a_status_that_has_no_body_passes_through(srv, origin, status):
    c = Client(srv, unique("pass-bodiless"))
    before = origin.count("/bodiless")
    got, h, body = raw_post(srv, "/functions/v1/bodiless", {**c.headers(), "content-type": "application/json"},
                            body=json.dumps({"status": status}).encode())
    assert (got, body) == (status, b""), (got, body[:300])
    assert h.get("x-request-id") and h.get("x-origin-call")
    assert origin.count("/bodiless") == before + 1


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_slow_origin_is_cut_off_with_504(srv, origin, chunked):
    c = Client(srv, unique("pass-slow"))
    headers = {**c.headers(), "content-type": "application/json"}
    t0 = time.time()
    if chunked:
        status, h, body = raw_post(srv, "/functions/v1/slow", headers, chunks=[b"{}"])
    else:
        status, h, body = raw_post(srv, "/functions/v1/slow", headers, body=b"{}")
    elapsed = time.time() - t0
    assert status == 504, body
    assert h["content-type"] == "application/problem+json" and b"upstream-timeout" in body
    assert elapsed < 2.9, elapsed  # the origin takes 3 s; the timeout is 1 s


def test_an_unknown_function_is_404_and_an_unreachable_origin_502(origin):
    c_port = free_port()  # nothing listens there
    s = Server(UPSTREAM_BASE_URL=f"http://127.0.0.1:{c_port}", UPSTREAM_FUNCTIONS="gone",
               UPSTREAM_KEY_POLICY="optional").start()
    try:
        c = Client(s, unique("pass-gone"))
        headers = {**c.headers(), "content-type": "application/json"}
        answers = []
        for quick in (0, 1):  # the guarded path, then (the token remembered) the quick one
            before = quick_passes(s)
            status, pairs, body = post_all_headers(s, "/functions/v1/gone", headers, b'{"a": 1}')
            assert status == 502, body
            assert quick_passes(s) == before + quick
            assert dict(pairs)["content-type"] == "application/problem+json"
            answers.append(what_a_client_sees(status, pairs, body))
        assert answers[0] == answers[1] and answers[1][2] == ["upstream", "worker"], answers
        assert json.loads(answers[1][3])["type"].endswith("upstream-unreachable")
        status, _, body = raw_post(s, "/functions/v1/other", headers, body=b'{"a": 1}')
        assert status == 404, body
    finally:
        s.cleanup()


def test_a_keyed_call_on_the_same_route_is_still_idempotent(srv, origin):
    c = Client(srv, unique("pass-keyed"))
    runs = origin.count("/echo")
    r1 = srv.request("POST", "/functions/v1/echo", {"k": 1}, c.headers("k-1"))
    r2 = srv.request("POST", "/functions/v1/echo", {"k": 1}, c.headers("k-1"))
    assert r1.status == r2.status == 200
    assert r2.header("idempotent-replayed") == "true" and r2.body == r1.body
    assert origin.count("/echo") == runs + 1
    # A malformed key is refused, never passed through.
    assert_problem(srv.request("POST", "/functions/v1/echo", {"k": 1}, c.headers("bad key with spaces")), 400)
    assert origin.count("/echo") == runs + 1


def test_a_short_declared_length_beside_a_long_chunked_body_is_still_limited(srv, origin):
    """A request smuggling both headers: the chunked body is what arrives, so the
    declared length must not let it stream past MAX_BODY_BYTES."""
    c = Client(srv, unique("pass-smuggle"))
    runs = origin.count("/echo")
    body = b"z" * (LIMIT + 4096)
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    head = (f"POST /functions/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {c.headers()['authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(head + chunked)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"413"), data[:300]
    assert origin.count("/echo") == runs


def test_an_origin_that_stalls_mid_body_is_504_when_keyed_and_streamed_when_passed(srv, origin):
    c = Client(srv, unique("pass-stall"))
    headers = {**c.headers(), "content-type": "application/json"}
    # Keyed: the answer is read whole in the key's object, so the timeout is a
    # 504 and the key is released (the retry runs again).
    runs = origin.count("/stall")
    t0 = time.time()
    status, h, body = raw_post(srv, "/functions/v1/stall", {**headers, "idempotency-key": "k-stall"}, body=b"{}")
    assert status == 504 and b"upstream-timeout" in body, body
    assert time.time() - t0 < 4.5
    status, _, _ = raw_post(srv, "/functions/v1/stall", {**headers, "idempotency-key": "k-stall"}, body=b"{}")
    assert status == 504
    assert origin.count("/stall") == runs + 2
    # Passed through: the headers came in time, so it is the origin's 200; the
    # body then streams as the origin sends it, whole once it resumes (the
    # timeout bounds the wait for the headers, not a download's length).
    status, _, body = raw_post(srv, "/functions/v1/stall", headers, body=b"{}")
    assert status == 200 and len(body) == 100000, (status, len(body))


def quick_passes(srv):
    """Passthroughs the Worker answered by its quick path (test hook)."""
    reply = srv.request("GET", "/__test/quick-passes")
    assert reply.status == 200, reply
    return reply.json()["count"]


def post_all_headers(srv, path, headers, body, timeout=60):
    """A POST; the answer's headers as (name, value) pairs, repeated names kept."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, [(k.lower(), v) for k, v in r.getheaders()], r.read()
    finally:
        conn.close()


def what_a_client_sees(status, pairs, body, volatile=()):
    """The parts of a passthrough's answer a client relies on, without what differs
    per call: the date, the request id (checked apart), the durations and `volatile`."""
    names = sorted({n for n, _ in pairs} - {"date", "x-request-id", "server-timing", *volatile})
    values = {n: [v for k, v in pairs if k == n] for n in names}
    timing = [p.strip().split(";")[0] for k, v in pairs if k == "server-timing" for p in v.split(",")]
    return status, values, timing, body


# Each case: the function, its request body, what differs between two calls
# (the origin's call number), and the status expected.
CASES = {
    "answered": ("echo", b'{"order": 42}', ("x-origin-call", "etag"), 200),
    "bodiless": ("bodiless", b'{"status": 204}', ("x-origin-call",), 204),
    "large": ("big", json.dumps({"bytes": 3 * 1024 * 1024}).encode(), (), 200),
    "timed-out": ("slow", b"{}", (), 504),
    # A status no answer can carry (1xx is never final; 600 and up is none):
    # a bad gateway.
    "status-600": ("big", b'{"status": 600, "bytes": 50}', (), 502),
    "status-199": ("big", b'{"status": 199, "bytes": 50}', (), 502),
}


@pytest.mark.parametrize("case", CASES)
def test_a_remembered_caller_gets_the_same_answer_by_the_quick_path(srv, origin, case):
    # A caller's first passthrough verifies its token on the guarded path; from
    # the second on, the Worker decides in one step and the answer is settled in
    # JavaScript (frontend_worker::quick_pass). A client sees no difference.
    name, body, volatile, want = CASES[case]
    c = Client(srv, unique("pass-quick"))
    headers = {**c.headers(), "content-type": "application/json"}
    seen, ids = [], set()
    for first in (True, False):
        before = quick_passes(srv)
        status, pairs, got = post_all_headers(srv, f"/functions/v1/{name}", headers, body, timeout=120)
        assert quick_passes(srv) == before + (0 if first else 1), "first" if first else "second"
        assert status == want, got[:300]
        request_ids = [v for k, v in pairs if k == "x-request-id"]
        assert len(request_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", request_ids[0]), pairs
        ids.add(request_ids[0])
        # Hop-by-hop headers are never the origin's: content-length and
        # transfer-encoding are the runtime's own framing.
        assert not {n for n, _ in pairs} & {"connection", "keep-alive", "upgrade"}, pairs
        if name == "echo":
            echoed = json.loads(got)
            echoed.pop("call")
            assert echoed == {"body": body.decode(), "key": None, "content_type": "application/json",
                              "authorization": headers["authorization"]}
        if got.startswith(b'{"call"'):  # the origin's answers number its calls
            answer = json.loads(got)
            answer.pop("call")
            got = json.dumps(answer).encode()
        seen.append(what_a_client_sees(status, pairs, got, volatile))
    assert len(ids) == 2
    assert seen[0] == seen[1]
    # The phases as they leave: the origin's own (none here), then idemgate's.
    assert seen[1][2] == ["upstream", "worker"], seen[1][2]
    if want >= 500:
        assert seen[1][1]["content-type"] == ["application/problem+json"]


def test_the_quick_path_refuses_what_the_guarded_path_refuses(srv, origin):
    # Once a caller is remembered, every other request still meets every check:
    # an expired or forged token, a key, an undeclared or too long body, another
    # method, an unknown function — none is answered by the quick path.
    c = Client(srv, unique("pass-quick-no"))
    headers = {**c.headers(), "content-type": "application/json"}
    assert raw_post(srv, "/functions/v1/echo", headers, body=b"{}")[0] == 200
    forged = {**headers, "authorization": headers["authorization"][:-2] + ("AA" if not headers["authorization"].endswith("AA") else "BB")}
    before = quick_passes(srv)
    assert raw_post(srv, "/functions/v1/echo", forged, body=b"{}")[0] == 401
    status, _, body = raw_post(srv, "/functions/v1/echo", {**headers, "idempotency-key": "k" + unique()}, body=b"{}")
    assert status == 200 and json.loads(body)["key"], body
    assert raw_post(srv, "/functions/v1/echo", {**headers, "x-idempotency-key": ""}, body=b"{}")[0] == 400
    assert raw_post(srv, "/functions/v1/echo", headers, body=b"z" * (LIMIT + 1))[0] == 413
    assert raw_post(srv, "/functions/v1/echo", headers, chunks=[b"{}"])[0] == 200
    assert raw_post(srv, "/functions/v1/nope", headers, body=b"{}")[0] == 404
    assert srv.request("PUT", "/functions/v1/echo", b"{}", headers).status == 405
    assert quick_passes(srv) == before
    # And the remembered caller still goes quick.
    assert raw_post(srv, "/functions/v1/echo", headers, body=b"{}")[0] == 200
    assert quick_passes(srv) == before + 1
