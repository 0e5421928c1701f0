"""Leases, expiry, sweeping, crashes and fail-closed auth: each needs its own server."""

import threading
import time

import pytest

from conftest import Client, Server, assert_problem, scope_of, text_doc, unique


@pytest.fixture(scope="module")
def short():
    """A server with a 3 s lease and a 3 s TTL."""
    s = Server(IDEMPOTENCY_LEASE_SECONDS=3, IDEMPOTENCY_TTL_SECONDS=3).start()
    yield s
    s.cleanup()


def test_expired_key_is_treated_as_new(short):
    c = Client(short, unique("ttl"))
    doc = text_doc()
    first = c.post_document(doc, "k-ttl")
    assert c.post_document(doc, "k-ttl").header("idempotent-replayed") == "true"
    time.sleep(3.5)
    again = c.post_document(doc, "k-ttl")
    assert again.status == 201 and again.header("idempotent-replayed") is None
    assert again.json()["id"] != first.json()["id"]
    # And with a new payload too: an expired key holds no fingerprint.
    time.sleep(3.5)
    assert c.post_document(text_doc("new"), "k-ttl").status == 201


def test_a_live_holder_past_its_lease_keeps_the_key_and_the_work_runs_once(short):
    c = Client(short, unique("lease"))
    doc = text_doc()
    # The holder works for 6 s under a 3 s lease: alive, so it renews the lease
    # (docs/contract.md, "Leases and takeovers": a live holder is never superseded).
    out = {}
    t = threading.Thread(target=lambda: out.setdefault(
        "r", c.post_document(doc, "k-lease", {"x-idemgate-test-delay-ms": "6000"})))
    t.start()
    time.sleep(0.8)
    assert_problem(c.post_document(doc, "k-lease"), 409, "idempotency-key-in-flight")
    time.sleep(3)
    assert_problem(c.post_document(doc, "k-lease"), 409, "idempotency-key-in-flight")
    t.join()
    assert out["r"].status == 201 and out["r"].header("idempotent-replayed") is None
    r = c.post_document(doc, "k-lease")
    assert r.status == 201 and r.header("idempotent-replayed") == "true"
    assert r.body == out["r"].body
    assert short.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{c.tenant}'") == 1


def test_scheduled_sweep_deletes_expired_records(short):
    c = Client(short, unique("sweep"))
    for i in range(3):
        assert c.post_document(text_doc(), f"k-sweep-{i}").status == 201
    assert short.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'") == 3
    time.sleep(3.5)
    r = short.request("GET", "/cdn-cgi/handler/scheduled?cron=*/15+*+*+*+*")
    assert r.status == 200, r
    deadline = time.time() + 10
    while short.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'") and time.time() < deadline:
        time.sleep(0.5)
    assert short.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'") == 0


def test_crash_while_holding_the_lease_recovers_with_no_half_written_rows():
    s = Server(IDEMPOTENCY_LEASE_SECONDS=20).start()
    try:
        c = Client(s, unique("crash"))
        doc = text_doc("Crash test document. " * 40)
        holder = threading.Thread(
            target=lambda: pytest.raises(Exception, c.post_document, doc, "k-crash", {"x-idemgate-test-delay-ms": "60000"}))
        holder.start()
        time.sleep(1.5)
        s.crash()  # SIGKILL wrangler and workerd mid-request
        holder.join()
        assert s.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{c.tenant}'") == 0
        s.start()  # same state directory
        # The lease survived the crash in the object's SQLite, but the restarted
        # object knows its holder died with the old instance: the retry takes over
        # at once instead of answering 409 until the 20 s lease runs out.
        r = c.post_document(doc, "k-crash")
        assert r.status == 201, r
        assert r.header("idempotent-replayed") is None
        assert s.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{c.tenant}'") == 1
        doc_id = r.json()["id"]
        assert s.d1_value(f"SELECT count(*) FROM chunks WHERE tenant = '{c.tenant}'") == r.json()["stats"]["chunks"]
        assert s.d1_value(f"SELECT count(*) FROM chunks WHERE document_id != '{doc_id}' AND tenant = '{c.tenant}'") == 0
        assert c.post_document(doc, "k-crash").header("idempotent-replayed") == "true"
    finally:
        s.cleanup()


def test_without_a_secret_every_authenticated_route_fails_closed():
    s = Server(AUTH_JWT_SECRET="").start()
    try:
        assert s.request("GET", "/healthz").status == 200
        c = Client(s, unique("nosecret"))
        assert_problem(c.post_document(text_doc(), "k"), 503, "auth-not-configured")
        assert_problem(c.get("/v1/documents/doc_x"), 503)
        assert_problem(c.get("/v1/idempotency/stats"), 503)
        assert_problem(s.request("GET", "/v1/idempotency/keys/k?route=/v1/documents"), 503)
    finally:
        s.cleanup()
