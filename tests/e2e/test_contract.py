"""The idempotency contract (docs/contract.md, "Statuses") against a real wrangler dev."""

import base64
import json
import threading
import time

from conftest import Client, SECRET, assert_problem, scope_of, text_doc, unique
from jwt import b64url, sign


def start_slow(client, doc, key, delay_ms, extra=None):
    """Sends a request that holds the lease for `delay_ms` (test hook), in a thread."""
    out = {}

    def run():
        out["reply"] = client.post_document(doc, key, {"x-idemgate-test-delay-ms": str(delay_ms), **(extra or {})})

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.8)  # let it take the lease
    return t, out


def test_healthz_needs_no_auth(server):
    r = server.request("GET", "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}


def test_first_request_runs_and_echoes_the_key(alice):
    r = alice.post_document(text_doc(), "k-first")
    assert r.status == 201, r
    assert r.header("idempotency-key") == "k-first"
    assert r.header("idempotent-replayed") is None
    body = r.json()
    assert r.header("location") == f"/v1/documents/{body['id']}"


def test_replay_returns_stored_status_body_and_allow_listed_headers(alice):
    doc = text_doc()
    first = alice.post_document(doc, "k-replay")
    second = alice.post_document(doc, "k-replay")
    assert first.status == second.status == 201
    assert second.body == first.body
    assert second.header("idempotent-replayed") == "true"
    assert second.header("x-idempotency-replay") == "true"
    assert second.header("idempotency-key") == "k-replay"
    assert second.header("location") == first.header("location")
    assert second.header("content-type") == first.header("content-type")
    assert second.header("set-cookie") is None


def test_same_payload_with_other_key_order_and_whitespace_replays(alice):
    first = alice.post_document('{"filename":"a.txt","content_type":"text/plain","content":"abc def"}', "k-canon")
    second = alice.post_document('{ "content" : "abc def",\n "content_type":"text/plain", "filename":"a.txt" }', "k-canon")
    assert first.status == 201 and second.status == 201
    assert second.header("idempotent-replayed") == "true"
    assert second.body == first.body


def test_same_key_with_other_payload_is_422_and_runs_nothing(server, alice):
    first = alice.post_document(text_doc("one"), "k-mismatch")
    assert first.status == 201
    r = alice.post_document(text_doc("two"), "k-mismatch")
    p = assert_problem(r, 422, "idempotency-key-reused")
    assert p["idempotency_key"] == "k-mismatch"
    assert server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{alice.tenant}'") == 1


def test_request_while_first_runs_gets_409_with_retry_after(alice):
    doc = text_doc()
    t, out = start_slow(alice, doc, "k-inflight", 3000)
    r = alice.post_document(doc, "k-inflight")
    t.join()
    p = assert_problem(r, 409, "idempotency-key-in-flight")
    assert r.header("retry-after") == "1"
    assert p["idempotency_key"] == "k-inflight"
    assert out["reply"].status == 201


def test_prefer_wait_coalesces_onto_the_first_result(alice):
    doc = text_doc()
    t, out = start_slow(alice, doc, "k-wait", 2000)
    r = alice.post_document(doc, "k-wait", {"prefer": "wait=10"})
    t.join()
    assert r.status == 201, r
    assert r.body == out["reply"].body
    assert r.header("preference-applied") == "wait=10"
    assert r.header("idempotent-replayed") == "true"


def test_prefer_wait_shorter_than_the_run_gets_409(alice):
    doc = text_doc()
    t, out = start_slow(alice, doc, "k-wait-short", 4000)
    started = time.time()
    r = alice.post_document(doc, "k-wait-short", {"prefer": "wait=1"})
    waited = time.time() - started
    t.join()
    assert_problem(r, 409, "idempotency-key-in-flight")
    assert 0.8 <= waited < 3.5, waited
    assert out["reply"].status == 201


def test_prefer_wait_on_a_mismatched_payload_is_422_at_once(alice):
    t, _ = start_slow(alice, text_doc("a"), "k-wait-mismatch", 2000)
    r = alice.post_document(text_doc("b"), "k-wait-mismatch", {"prefer": "wait=10"})
    t.join()
    assert_problem(r, 422, "idempotency-key-reused")


def test_prefer_wait_beyond_the_cap_waits_the_cap_instead_of_409(alice):
    # 10^16 s used to wrap to a negative wait in milliseconds: 409 at once.
    doc = text_doc()
    t, out = start_slow(alice, doc, "k-wait-huge", 2000)
    r = alice.post_document(doc, "k-wait-huge", {"prefer": "wait=10000000000000000"})
    t.join()
    assert r.status == 201, r
    assert r.body == out["reply"].body
    assert r.header("idempotent-replayed") == "true"


def test_numbers_are_fingerprinted_by_their_digits_not_a_float(server, alice):
    # 0.1 and 0.10000000000000001 are one f64: they used to share a fingerprint,
    # so the second payload replayed the first answer instead of 422.
    def create_job(rate):
        body = ('{"dataset_id":"ds_missing","base_model":"m",'
                '"hyperparameters":{"epochs":1,"batch_size":1,"learning_rate":%s}}' % rate)
        return server.request("POST", "/v1/training-jobs", body, alice.headers("k-digits"))

    first = create_job("0.1")
    assert_problem(first, 404)
    assert_problem(create_job("0.10000000000000001"), 422, "idempotency-key-reused")
    again = create_job("0.1")
    assert again.status == 404 and again.header("idempotent-replayed") == "true", again


def test_without_key_documents_derive_one_from_the_content(server, alice):
    doc = text_doc()
    first = alice.post_document(doc)
    second = alice.post_document(doc)
    assert first.status == second.status == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.header("idempotent-replayed") == "true"
    assert first.header("idempotency-key").startswith("derived:")
    assert server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{alice.tenant}'") == 1


def test_derived_keys_are_per_tenant(alice, bob):
    doc = text_doc()
    a = alice.post_document(doc)
    b = bob.post_document(doc)
    assert a.status == b.status == 201
    assert a.json()["id"] != b.json()["id"]
    assert b.header("idempotent-replayed") is None


def test_unkeyed_uploads_of_the_same_bytes_under_other_names_types_or_chunking_are_new_documents_never_422(server, alice):
    """The derived key covers everything that changes the answer (docs/contract.md, "Keys"): the
    same bytes as a.md (text/markdown), then as b.txt (text/plain), then chunked
    differently, are three documents; each repeated is a replay of its own."""
    content = f"# Title {unique('c')}\n\nSome words of a paragraph here."
    variants = [
        {"filename": "a.md", "content_type": "text/markdown", "content": content},
        {"filename": "b.txt", "content_type": "text/plain", "content": content},
        {"filename": "b.txt", "content_type": "text/plain", "content": content, "chunk_size": 200},
        {"filename": "b.txt", "content_type": "text/plain; charset=utf-8", "content": content},
        {"filename": "b.txt", "content_type": "text/plain",
         "content_base64": base64.b64encode(content.encode()).decode()},
    ]
    firsts = [alice.post_document(v) for v in variants]
    assert [r.status for r in firsts] == [201] * len(variants), firsts
    assert len({r.json()["id"] for r in firsts}) == len(variants)
    assert all(r.header("idempotent-replayed") is None for r in firsts)
    assert len({r.header("idempotency-key") for r in firsts}) == len(variants)
    assert firsts[0].json()["content_type"] == "text/markdown" and firsts[1].json()["filename"] == "b.txt"
    for v, first in zip(variants, firsts):
        again = alice.post_document(v)
        assert again.status == 201 and again.header("idempotent-replayed") == "true", again
        assert again.body == first.body
    # The same document with its JSON keys in another order is the same request.
    reordered = json.dumps(dict(reversed(list(variants[1].items()))), indent=2)
    again = alice.post_document(reordered)
    assert again.status == 201 and again.json()["id"] == firsts[1].json()["id"], again
    sha = firsts[0].json()["sha256"]
    assert server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{alice.tenant}' AND sha256 = '{sha}'") == len(variants)


def test_malformed_keys_are_400_and_store_nothing(server, alice):
    for bad in ["", "   ", "a" * 256, "a,b", "clé", "a b", "semi;colon", '"unterminated']:
        r = alice.post_document(text_doc(), bad)
        assert_problem(r, 400, "invalid-idempotency-key")
    assert server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{alice.tenant}'") == 0


def test_key_of_255_chars_is_accepted(alice):
    r = alice.post_document(text_doc(), "k" * 255)
    assert r.status == 201, r


def test_quoted_key_is_the_same_key_unquoted(alice):
    doc = text_doc()
    first = alice.post_document(doc, '"k-quoted"')
    assert first.status == 201 and first.header("idempotency-key") == "k-quoted"
    second = alice.post_document(doc, "k-quoted")
    assert second.header("idempotent-replayed") == "true"


def test_legacy_header_is_accepted_and_is_the_same_key(alice):
    doc = text_doc()
    first = alice.post_document(doc, None, {"x-idempotency-key": "k-legacy"})
    assert first.status == 201
    second = alice.post_document(doc, "k-legacy")
    assert second.header("idempotent-replayed") == "true"


def test_both_headers_that_differ_are_400(alice):
    r = alice.post_document(text_doc(), "k-a", {"x-idempotency-key": "k-b"})
    assert_problem(r, 400, "invalid-idempotency-key")
    same = alice.post_document(text_doc(), "k-same", {"x-idempotency-key": "k-same"})
    assert same.status == 201


def test_handler_failure_is_not_stored_and_releases_the_key(server, alice):
    doc = text_doc()
    r = alice.post_document(doc, "k-throw", {"x-idemgate-test-fail": "handler"})
    assert_problem(r, 500)
    assert server.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope LIKE '{scope_of(alice.tenant)}%'") == 0
    retry = alice.post_document(doc, "k-throw")
    assert retry.status == 201, retry
    assert retry.header("idempotent-replayed") is None


def test_storage_failure_is_503_and_leaves_nothing_half_written(server, alice):
    doc = text_doc()
    r = alice.post_document(doc, "k-storage", {"x-idemgate-test-fail": "storage"})
    assert_problem(r, 503, "storage-unavailable")
    assert r.header("retry-after")
    assert server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{alice.tenant}'") == 0
    assert server.d1_value(f"SELECT count(*) FROM chunks WHERE tenant = '{alice.tenant}'") == 0
    assert server.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope LIKE '{scope_of(alice.tenant)}%'") == 0
    retry = alice.post_document(doc, "k-storage")
    assert retry.status == 201
    doc_id = retry.json()["id"]
    assert server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{alice.tenant}'") == 1
    assert server.d1_value(f"SELECT count(*) FROM chunks WHERE document_id = '{doc_id}'") == retry.json()["stats"]["chunks"]


def test_same_key_in_another_tenant_is_independent_and_cannot_read(server, alice, bob):
    a = alice.post_document(text_doc("alice's secret text"), "shared-key")
    b = bob.post_document(text_doc("bob's own text"), "shared-key")
    assert a.status == b.status == 201
    assert b.header("idempotent-replayed") is None
    assert a.json()["id"] != b.json()["id"]
    a_id = a.json()["id"]
    assert_problem(bob.get(f"/v1/documents/{a_id}"), 404)
    assert_problem(bob.get(f"/v1/documents/{a_id}/chunks"), 404)
    assert alice.get(f"/v1/documents/{a_id}").json()["text"] == "alice's secret text"
    state = bob.get("/v1/idempotency/keys/shared-key?route=/v1/documents").json()
    assert state["fingerprint"] != alice.get("/v1/idempotency/keys/shared-key?route=/v1/documents").json()["fingerprint"]


def test_get_ignores_the_key(alice):
    created = alice.post_document(text_doc(), "k-get").json()
    for _ in range(2):
        r = alice.get(f"/v1/documents/{created['id']}", {"idempotency-key": "k-get"})
        assert r.status == 200
        assert r.header("idempotent-replayed") is None
    r = alice.server.request("HEAD", f"/v1/documents/{created['id']}", None, alice.headers("k-get"))
    assert r.status == 200
    r = alice.server.request("OPTIONS", "/v1/documents", None, {"idempotency-key": "k-get"})
    assert r.status == 204 and "POST" in r.header("allow")


def test_body_over_the_limit_is_413_before_any_work(server, alice):
    big = text_doc("x" * (1_048_576 + 10))
    r = alice.post_document(big, "k-big")
    assert_problem(r, 413, "payload-too-large")
    assert server.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope LIKE '{scope_of(alice.tenant)}%'") == 0


def test_invalid_requests_are_rejected_and_not_stored(server, alice):
    assert_problem(alice.post_document("{not json", "k-v1"), 400, "invalid-json")
    assert_problem(alice.post_document({**text_doc(), "extra": 1}, "k-v2"), 400, "unknown-field")
    assert_problem(alice.post_document({"filename": "a", "content_type": "text/plain",
                                        "content_base64": "@@not base64@@"}, "k-v3"), 400, "invalid-base64")
    assert_problem(alice.post_document({"filename": "a.pdf", "content_type": "application/pdf",
                                        "content": "x"}, "k-v4"), 415, "unsupported-media-type")
    assert_problem(alice.post_document({"content_type": "text/plain", "content": "x"}, "k-v5"), 400, "invalid-field")
    assert server.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope LIKE '{scope_of(alice.tenant)}%'") == 0
    # A request that failed validation does not burn its key.
    assert alice.post_document(text_doc(), "k-v4").status == 201


def test_auth_failures_are_401_problems(server):
    doc = text_doc()
    now = int(time.time())
    cases = {
        "missing": None,
        "not bearer": "Basic dXNlcjpwdw==",
        "garbage": "Bearer not.a.jwt",
        "bad signature": "Bearer " + sign({"sub": "u", "exp": now + 60}, "wrong-secret"),
        "expired": "Bearer " + sign({"sub": "u", "exp": now - 1}, SECRET),
        "alg none": "Bearer " + b64url(b'{"alg":"none"}') + "." + b64url(b'{"sub":"u","exp":%d}' % (now + 60)) + ".",
        "alg HS512": "Bearer " + sign({"sub": "u", "exp": now + 60}, SECRET, {"alg": "HS512"}),
    }
    for name, header in cases.items():
        headers = {"content-type": "application/json", "idempotency-key": "k"}
        if header:
            headers["authorization"] = header
        r = server.request("POST", "/v1/documents", doc, headers)
        assert_problem(r, 401, "unauthorized")
    assert server.d1_value("SELECT count(*) FROM idempotency_records WHERE key = 'k'") == 0


def test_unknown_routes_and_methods_are_problems(alice):
    assert_problem(alice.get("/v1/nothing-here"), 404)
    assert_problem(alice.server.request("PUT", "/v1/documents", "{}", alice.headers()), 405)
    assert_problem(alice.server.request("POST", "/healthz", "{}", {}), 405)
