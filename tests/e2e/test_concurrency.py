"""Exactly once under concurrency: one key, many simultaneous identical requests."""

from collections import Counter

from conftest import concurrently, scope_of, text_doc

N = 200


def doc_count(server, client):
    return server.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{client.tenant}'")


def test_200_concurrent_with_prefer_wait_run_once_and_all_get_the_same_answer(server, alice):
    doc = text_doc("Concurrent upload. " * 50)
    replies = concurrently(N, lambda i: alice.post_document(doc, "storm-wait", {"prefer": "wait=10"}, timeout=120))
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: N}, statuses
    bodies = {r.body for r in replies}
    assert len(bodies) == 1, f"{len(bodies)} different bodies"
    executed = [r for r in replies if r.header("idempotent-replayed") is None]
    assert len(executed) == 1, len(executed)
    assert doc_count(server, alice) == 1
    doc_id = replies[0].json()["id"]
    assert server.d1_value(f"SELECT count(*) FROM chunks WHERE document_id = '{doc_id}'") == replies[0].json()["stats"]["chunks"]
    assert server.d1_value(f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(alice.tenant, alice.sub)}'") == 1


def test_200_concurrent_without_prefer_run_once_and_the_rest_replay_or_409(server, bob):
    doc = text_doc("Another concurrent upload. " * 50)
    replies = concurrently(N, lambda i: bob.post_document(doc, "storm-nowait", timeout=120))
    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {201, 409}, statuses
    executed = [r for r in replies if r.status == 201 and r.header("idempotent-replayed") is None]
    assert len(executed) == 1, statuses
    replayed = [r for r in replies if r.status == 201 and r.header("idempotent-replayed") == "true"]
    assert all(r.body == executed[0].body for r in replayed)
    for r in replies:
        if r.status == 409:
            assert r.header("retry-after") == "1"
    assert doc_count(server, bob) == 1


def test_concurrent_requests_with_different_payloads_one_wins_the_rest_conflict(server, alice):
    replies = concurrently(40, lambda i: alice.post_document(text_doc(f"payload {i}"), "storm-mixed", {"prefer": "wait=10"}, timeout=120))
    statuses = Counter(r.status for r in replies)
    executed = [r for r in replies if r.status == 201 and r.header("idempotent-replayed") is None]
    assert len(executed) == 1, statuses
    assert set(statuses) <= {201, 422}, statuses
    assert doc_count(server, alice) == 1
