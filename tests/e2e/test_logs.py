"""Structured logs: one JSON line per request in the dev server's
output, matched to the request by its `X-Request-Id`, with the fields
docs/operations.md ("Logs") lists — and never a raw idempotency key, a token or
body content.

Its own server (the origin fixture behind `/functions/v1/*` with
`UPSTREAM_KEY_POLICY=optional`), since it reads the whole log of that server."""

import json
import re
import threading
import time
import uuid
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (Client, Server, assert_problem, forwarded_key, logged_requests, request_lines, scope_of,
                      text_doc, unique)

TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
FIELDS = {"event", "time", "request_id", "tenant", "method", "route", "outcome", "status", "total_ms",
          "object_ms", "origin_ms", "key_sha256"}


def test_request_lines_are_found_behind_prefixes_colours_and_wraps():
    line = {"event": "request", "request_id": "a" * 32, "status": 200}
    raw = json.dumps(line, separators=(",", ":"))
    text = "\n".join([
        raw,
        f"[wrangler:info] {raw}",
        f"\x1b[2m11:00:00\x1b[0m {raw} trailing",
        raw[:30] + "\n" + raw[30:],
        '{"event":"request", broken',
        "[wrangler:info] GET /healthz 200 OK (3ms)",
    ])
    assert request_lines(text) == [line] * 4


@pytest.fixture(scope="module")
def logged(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,slow,flaky", UPSTREAM_KEY_POLICY="optional",
               IDEMPOTENCY_LEASE_SECONDS=20).start()
    yield s
    s.cleanup()


class Expect:
    """A request made, and what its log line must say."""

    def __init__(self, reply, outcome, route, method="POST", tenant=None, key=None, object_ms=False,
                 origin_ms=False):
        self.reply, self.outcome, self.route, self.method = reply, outcome, route, method
        self.tenant, self.key, self.object_ms, self.origin_ms = tenant, key, object_ms, origin_ms


def test_every_request_logs_one_line_with_its_outcome_and_no_secret(logged, origin):
    started = datetime.now(timezone.utc)
    c = Client(logged, unique("logs"), unique("tenant"))
    scope = scope_of(c.tenant, c.sub)
    secret = f"BODY-{uuid.uuid4().hex}"       # body content that must never reach the log
    keys = {name: f"key-{name}-{uuid.uuid4().hex}" for name in
            ("doc", "slow", "invalid", "flaky", "panic")}
    admin_key = f"key-admin-{uuid.uuid4().hex}"
    bad_key = f"bad key {uuid.uuid4().hex}"
    doc = text_doc(f"A document holding {secret}.")
    fn_body = {"note": secret}

    def fn(name, key=None, extra=None, timeout=60):
        return logged.request("POST", f"/functions/v1/{name}", fn_body, c.headers(key, extra), timeout=timeout)

    def doc_key_route(reply, outcome, key="doc", object_ms=False):
        return Expect(reply, outcome, "POST /v1/documents", tenant=c.tenant,
                      key=("POST /v1/documents", keys[key]), object_ms=object_ms)

    made = []
    first = c.post_document(doc, keys["doc"])
    assert first.status == 201, first
    made.append(doc_key_route(first, "executed", object_ms=True))
    again = c.post_document(doc, keys["doc"])
    assert again.status == 201 and again.header("idempotent-replayed") == "true", again
    made.append(doc_key_route(again, "replayed"))
    other = c.post_document(text_doc(f"Another text {secret}."), keys["doc"])
    assert_problem(other, 422, "idempotency-key-reused")
    made.append(doc_key_route(other, "mismatch"))

    # A slow origin call holds its key: a second request meets it in flight (409),
    # a third waits for its answer (Prefer: wait).
    fn_route = "POST /functions/v1/slow"
    before = origin.count("/slow")
    slow = {}
    runner = threading.Thread(target=lambda: slow.setdefault("reply", fn("slow", keys["slow"])))
    runner.start()
    deadline = time.time() + 20
    while origin.count("/slow") == before and time.time() < deadline:
        time.sleep(0.05)
    assert origin.count("/slow") == before + 1, "the slow call never reached the origin"
    busy = fn("slow", keys["slow"])
    assert_problem(busy, 409, "idempotency-key-in-flight")
    waited = fn("slow", keys["slow"], {"prefer": "wait=10"})
    runner.join(30)
    assert slow["reply"].status == 200, slow
    assert waited.status == 200 and waited.header("preference-applied"), waited
    made.append(Expect(slow["reply"], "executed", "POST /functions/v1/{name}", tenant=c.tenant,
                       key=(fn_route, keys["slow"]), object_ms=True, origin_ms=True))
    made.append(Expect(busy, "conflict", "POST /functions/v1/{name}", tenant=c.tenant,
                       key=(fn_route, keys["slow"]), object_ms=True))
    made.append(Expect(waited, "waited", "POST /functions/v1/{name}", tenant=c.tenant,
                       key=(fn_route, keys["slow"]), object_ms=True))

    through = fn("echo")
    assert through.status == 200 and through.json()["key"] is None, through
    made.append(Expect(through, "passthrough", "POST /functions/v1/{name}", tenant=c.tenant, origin_ms=True))

    flaky = fn("flaky", keys["flaky"])
    assert flaky.status == 500, flaky
    made.append(Expect(flaky, "failed", "POST /functions/v1/{name}", tenant=c.tenant,
                       key=("POST /functions/v1/flaky", keys["flaky"]), object_ms=True, origin_ms=True))

    no_token = logged.request("POST", "/v1/documents", doc, {"content-type": "application/json",
                                                             "idempotency-key": keys["doc"]})
    assert_problem(no_token, 401)
    made.append(Expect(no_token, "rejected", "POST /v1/documents"))
    malformed = c.post_document(doc, bad_key)
    assert_problem(malformed, 400)
    made.append(Expect(malformed, "rejected", "POST /v1/documents", tenant=c.tenant))
    invalid = c.post_document({"filename": "x.txt", "content": secret, "unknown": secret}, keys["invalid"])
    assert_problem(invalid, 400)
    made.append(Expect(invalid, "rejected", "POST /v1/documents", tenant=c.tenant))

    read = c.get(f"/v1/documents/{first.json()['id']}")
    assert read.status == 200, read
    made.append(Expect(read, "read", "GET /v1/documents/{id}", "GET", tenant=c.tenant))
    # The key admin path holds its key (wrangler's own access line prints it): a
    # key of its own, kept out of the no-secret check below.
    state = c.get(f"/v1/idempotency/keys/{admin_key}?route=/v1/documents")
    assert_problem(state, 404)
    made.append(Expect(state, "admin", "GET /v1/idempotency/keys/{key}", "GET", tenant=c.tenant,
                       key=("POST /v1/documents", admin_key), object_ms=True))

    # Last: a panic kills every request in flight in the isolate. Its line comes
    # from the panic guard's JavaScript, the Rust future having died.
    panic = c.post_document(doc, keys["panic"], {"x-idemgate-test-fail": "panic"}, timeout=20)
    assert_problem(panic, 500, "internal")
    made.append(Expect(panic, "error", "POST /v1/documents"))

    ids = {e.reply.header("x-request-id") for e in made}
    assert None not in ids and len(ids) == len(made), "every answer carries its own X-Request-Id"
    lines = logged_requests(logged, ids)
    text = logged.log_path.read_text(errors="replace")
    by_id = {}
    for line in lines:
        by_id.setdefault(line.get("request_id"), []).append(line)
    finished = datetime.now(timezone.utc)

    for e in made:
        rid = e.reply.header("x-request-id")
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
        got = by_id.get(rid, [])
        assert len(got) == 1, f"{e.outcome}: {len(got)} lines for request {rid}"
        line = got[0]
        assert set(line) <= FIELDS, line
        assert line["event"] == "request"
        assert TIME.match(line["time"]), line
        at = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert started - timedelta(seconds=2) <= at <= finished, line
        assert line["method"] == e.method, line
        assert line["route"] == e.route, line
        assert line["outcome"] == e.outcome, line
        assert line["status"] == e.reply.status and type(line["status"]) is int, line
        assert isinstance(line["total_ms"], (int, float)) and line["total_ms"] >= 0, line
        assert line.get("tenant") == e.tenant, line
        if e.key is None:
            assert "key_sha256" not in line, line
        else:
            route, key = e.key
            assert line["key_sha256"] == forwarded_key(scope, route, key)[:12], line
        if e.object_ms:
            assert isinstance(line["object_ms"], (int, float)) and line["object_ms"] >= 0, line
        elif e.outcome in ("passthrough", "rejected", "read", "error"):
            assert "object_ms" not in line, line
        if e.origin_ms:
            assert isinstance(line["origin_ms"], (int, float)) and line["origin_ms"] >= 0, line
        else:
            assert "origin_ms" not in line, line

    slow_line = by_id[slow["reply"].header("x-request-id")][0]
    assert slow_line["origin_ms"] >= 2500, slow_line            # the origin sleeps 3 s
    assert slow_line["total_ms"] >= slow_line["object_ms"] >= slow_line["origin_ms"], slow_line
    waited_line = by_id[waited.header("x-request-id")][0]
    assert waited_line["total_ms"] >= 500, waited_line          # it waited for the slow call

    # One line per request: the tenant's lines are exactly those of its requests.
    mine = [l for l in lines if l.get("tenant") == c.tenant]
    assert sorted(l["request_id"] for l in mine) == sorted(
        e.reply.header("x-request-id") for e in made if e.tenant), mine

    # Neither a raw key, nor the token, nor body content anywhere in the output.
    for name, value in [*keys.items(), ("malformed key", bad_key), ("token", c.token),
                        ("token signature", c.token.rsplit(".", 1)[1]), ("body", secret)]:
        assert value not in text, f"the {name} appears in the dev server's output"
    admin_lines = by_id[state.header("x-request-id")]
    assert admin_key not in json.dumps(admin_lines)


def test_with_request_log_off_no_request_line_is_printed_and_answers_keep_their_id(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo", REQUEST_LOG="off").start()
    try:
        c = Client(s, unique("quiet"))
        replies = [c.server.request("POST", "/functions/v1/echo", {"n": 1}, c.headers("k-quiet")) for _ in range(2)]
        replies.append(s.request("GET", "/healthz"))
        assert [r.status for r in replies] == [200, 200, 200]
        assert replies[1].header("idempotent-replayed") == "true"
        ids = [r.header("x-request-id") for r in replies]
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
        time.sleep(2)  # wrangler prints the Worker's output a little later
        assert request_lines(Path(s.log_path).read_text(errors="replace")) == []
    finally:
        s.cleanup()


def test_a_request_log_setting_that_does_not_parse_refuses_requests_and_names_it(origin):
    s = Server(REQUEST_LOG="verbose").start(ready_status=500)
    try:
        p = assert_problem(s.request("GET", "/v1/idempotency/stats", None, Client(s, unique("x")).headers()), 500,
                           "misconfigured")
        assert "REQUEST_LOG" in p["detail"], p
    finally:
        s.cleanup()
