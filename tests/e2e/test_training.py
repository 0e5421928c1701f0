"""generate-training-data, start-training and the trainer's side, end to end."""

import json
import time

import pytest

from conftest import Client, Server, assert_problem, concurrently, unique

HANDBOOK = """# Handbook

Intro text that belongs to no section.

## Refunds

Refunds are issued within 14 days of a return.

## Shipping

We ship worldwide. Orders leave the warehouse in two days.

## Empty
"""


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(TRAINER_URL=f"{origin.url}/trainer", UPSTREAM_TIMEOUT_MS=2000, CHUNK_SIZE=200, CHUNK_OVERLAP=20).start()
    yield s
    s.cleanup()


def upload(c, content, filename="doc.md", key=None):
    r = c.post_document({"filename": filename, "content_type": "text/markdown", "content": content}, key or unique("up"))
    assert r.status == 201, r
    return r.json()["id"]


def post(c, path, body, key=None, extra=None):
    return c.server.request("POST", path, body, c.headers(key, extra))


def dataset(c, doc_ids, fmt="chunks", key=None, **extra):
    return post(c, "/v1/training-data", {"document_ids": doc_ids, "format": fmt, **extra}, key or unique("ds"))


def jsonl(c, ds_id):
    r = c.get(f"/v1/training-data/{ds_id}.jsonl")
    assert r.status == 200, r
    assert r.header("content-type").startswith("application/x-ndjson")
    return [json.loads(line) for line in r.body.decode().splitlines()]


def job(c, ds_id, key=None, **hp):
    hyper = {"epochs": 3, "learning_rate": 0.0001, "batch_size": 16, **hp}
    return post(c, "/v1/training-jobs", {"dataset_id": ds_id, "base_model": "llama-3-8b", "hyperparameters": hyper},
                key or unique("job"))


def event(c, job_id, event_id, type_, **fields):
    return post(c, f"/v1/training-jobs/{job_id}/events", {"event_id": event_id, "type": type_, **fields})


def test_training_data_needs_a_key(srv):
    c = Client(srv, unique("td"))
    r = c.server.request("POST", "/v1/training-data", {"document_ids": ["x"], "format": "chunks"}, c.headers())
    assert_problem(r, 400, "idempotency-key-required")


def test_chunks_dataset_lists_every_chunk_and_streams_jsonl(srv):
    c = Client(srv, unique("td"))
    long_text = "\n\n".join(f"Paragraph {i} talks about topic {i} at some length." * 3 for i in range(10))
    d1 = upload(c, long_text)
    r = dataset(c, [d1])
    assert r.status == 201, r
    body = r.json()
    chunks = c.get(f"/v1/documents/{d1}/chunks?limit=1000").json()["chunks"]
    assert body["stats"]["examples"] == len(chunks) > 1
    lines = jsonl(c, body["dataset_id"])
    assert [l["text"] for l in lines] == [ch["text"] for ch in chunks]
    assert body["stats"]["chars"] == sum(len(ch["text"]) for ch in chunks)
    assert body["stats"]["estimated_tokens"] > 0
    meta = c.get(f"/v1/training-data/{body['dataset_id']}").json()
    assert meta["stats"]["examples"] == len(lines)


def test_chat_dataset_pairs_headings_with_sections(srv):
    c = Client(srv, unique("td"))
    d = upload(c, HANDBOOK)
    r = dataset(c, [d], "chat")
    assert r.status == 201, r
    lines = jsonl(c, r.json()["dataset_id"])
    users = [l["messages"][0]["content"] for l in lines]
    assert users == ["Handbook", "Refunds", "Shipping"]
    assert lines[1]["messages"] == [{"role": "user", "content": "Refunds"},
                                   {"role": "assistant", "content": "Refunds are issued within 14 days of a return."}]


def test_duplicates_are_dropped_and_counted_per_document(srv):
    c = Client(srv, unique("td"))
    a = upload(c, HANDBOOK, "a.md")
    b = upload(c, HANDBOOK, "b.md")
    r = dataset(c, [a, b], "chat")
    s = r.json()["stats"]
    assert s["examples"] == 3 and s["duplicates_dropped"] == 3
    assert s["per_document"] == [{"document_id": a, "examples": 3}, {"document_id": b, "examples": 0}]


def test_min_chars_and_max_examples(srv):
    c = Client(srv, unique("td"))
    d = upload(c, HANDBOOK)
    s = dataset(c, [d], "chat", min_chars=60).json()["stats"]
    assert s["examples"] == 1
    s = dataset(c, [d], "chat", max_examples=2).json()["stats"]
    assert s["examples"] == 2


def test_the_same_inputs_under_different_keys_give_identical_examples(srv):
    c = Client(srv, unique("td"))
    docs = [upload(c, HANDBOOK), upload(c, "Some plain words. " * 40)]
    a = dataset(c, docs, "chunks", key="k-a").json()
    b = dataset(c, docs, "chunks", key="k-b").json()
    assert a["dataset_id"] != b["dataset_id"]
    assert jsonl(c, a["dataset_id"]) == jsonl(c, b["dataset_id"])
    assert a["stats"] == b["stats"]


def test_unknown_or_foreign_documents_are_named_in_a_404(srv):
    alice, bob = Client(srv, unique("a")), Client(srv, unique("b"))
    mine = upload(alice, HANDBOOK)
    r = dataset(bob, [mine, "doc_missing"])
    p = assert_problem(r, 404)
    assert mine in p["detail"] and "doc_missing" in p["detail"]


def test_invalid_dataset_requests_are_400_naming_the_field(srv):
    c = Client(srv, unique("td"))
    assert_problem(post(c, "/v1/training-data", {"document_ids": [], "format": "chunks"}, "k1"), 400)
    p = assert_problem(post(c, "/v1/training-data", {"document_ids": ["a"], "format": "poems"}, "k2"), 400)
    assert "format" in p["detail"]
    p = assert_problem(post(c, "/v1/training-data", {"document_ids": ["a"], "format": "chat", "x": 1}, "k3"), 400)
    assert "x" in p["detail"]


def test_hyperparameters_are_validated_naming_the_field(srv):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    for bad, field in [({"epochs": 0}, "epochs"), ({"epochs": 101}, "epochs"), ({"learning_rate": 0}, "learning_rate"),
                       ({"learning_rate": 1.5}, "learning_rate"), ({"batch_size": 4097}, "batch_size"),
                       ({"momentum": 0.9}, "momentum")]:
        p = assert_problem(job(c, ds, **bad), 400)
        assert field in p["detail"], (bad, p)


def test_training_needs_an_own_non_empty_dataset(srv):
    alice, bob = Client(srv, unique("a")), Client(srv, unique("b"))
    ds = dataset(alice, [upload(alice, HANDBOOK)], "chat").json()["dataset_id"]
    assert_problem(job(bob, ds), 404)
    empty = dataset(alice, [upload(alice, "no headings at all")], "chat").json()
    assert empty["stats"]["examples"] == 0
    assert_problem(job(alice, empty["dataset_id"]), 422)


def test_a_job_is_dispatched_to_the_trainer_exactly_once_across_retries(srv, origin):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    before = origin.count("/trainer")
    replies = [job(c, ds, key="k-train") for _ in range(5)]
    replies += concurrently(20, lambda i: job(c, ds, key="k-train"))
    assert {r.status for r in replies} <= {201, 409}
    created = replies[0].json()
    assert created["status"] == "queued"
    assert all(r.json()["id"] == created["id"] for r in replies if r.status == 201)
    assert origin.count("/trainer") == before + 1
    headers, body = origin.requests["/trainer"][-1]
    assert headers["idempotency-key"] == f"dispatch-{created['id']}"
    assert json.loads(body)["id"] == created["id"]
    got = c.get(f"/v1/training-jobs/{created['id']}").json()
    assert got["dispatch"]["status"] == "dispatched"


def test_a_failed_dispatch_leaves_the_job_queued_and_the_sweep_retries_it(srv, origin):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    origin.trainer_status = 503
    try:
        created = job(c, ds).json()
    finally:
        origin.trainer_status = 202
    got = c.get(f"/v1/training-jobs/{created['id']}").json()
    assert got["status"] == "queued"
    assert got["dispatch"]["status"] == "failed" and "503" in got["dispatch"]["error"]
    queued = c.get("/v1/training-jobs?status=queued").json()["jobs"]
    assert created["id"] in [j["id"] for j in queued]
    assert srv.request("GET", "/cdn-cgi/handler/scheduled?cron=*/15+*+*+*+*").status == 200
    deadline = time.time() + 10
    while c.get(f"/v1/training-jobs/{created['id']}").json()["dispatch"]["status"] != "dispatched":
        assert time.time() < deadline
        time.sleep(0.3)
    keys = [h["idempotency-key"] for h, _ in origin.requests["/trainer"]]
    assert keys.count(f"dispatch-{created['id']}") == 2  # same derived key both times


def test_trainer_events_drive_the_job_and_duplicates_change_nothing(srv):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    jid = job(c, ds).json()["id"]
    claimed = event(c, jid, "ev-1", "claimed")
    assert claimed.status == 200 and claimed.json()["status"] == "claimed"
    dup = event(c, jid, "ev-1", "claimed")
    assert dup.body == claimed.body and dup.header("idempotent-replayed") == "true"
    assert event(c, jid, "ev-2", "running").json()["status"] == "running"
    prog = event(c, jid, "ev-3", "progress", step=10, metrics={"loss": 0.5})
    assert prog.status == 200 and prog.json()["status"] == "running"
    illegal = event(c, jid, "ev-4", "claimed")
    p = assert_problem(illegal, 409, "invalid-transition")
    assert p["current_state"] == "running"
    assert event(c, jid, "ev-5", "succeeded", artifact="s3://models/m1").json()["status"] == "succeeded"
    after = event(c, jid, "ev-6", "running")
    assert assert_problem(after, 409)["current_state"] == "succeeded"
    assert event(c, jid, "ev-5", "succeeded", artifact="s3://models/m1").header("idempotent-replayed") == "true"
    got = c.get(f"/v1/training-jobs/{jid}").json()
    assert got["status"] == "succeeded" and got["artifact"] == "s3://models/m1"
    assert got["progress"]["step"] == 10
    assert [(e["event_id"], e["type"], e["to"]) for e in got["events"]] == [
        ("ev-1", "claimed", "claimed"), ("ev-2", "running", "running"),
        ("ev-3", "progress", "running"), ("ev-5", "succeeded", "succeeded")]
    assert got["version"] == 4


def test_the_same_event_id_with_another_payload_is_422(srv):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    jid = job(c, ds).json()["id"]
    assert event(c, jid, "ev-x", "claimed").status == 200
    assert_problem(event(c, jid, "ev-x", "failed", error="boom"), 422, "idempotency-key-reused")


def test_cancel_only_an_unfinished_job(srv):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    jid = job(c, ds).json()["id"]
    assert_problem(post(c, f"/v1/training-jobs/{jid}/cancel", {}), 400, "idempotency-key-required")
    r = post(c, f"/v1/training-jobs/{jid}/cancel", {"reason": "wrong data"}, "k-cancel")
    assert r.status == 200 and r.json()["status"] == "cancelled"
    again = post(c, f"/v1/training-jobs/{jid}/cancel", {"reason": "wrong data"}, "k-cancel")
    assert again.header("idempotent-replayed") == "true"
    other = post(c, f"/v1/training-jobs/{jid}/cancel", {}, "k-cancel-2")
    assert assert_problem(other, 409)["current_state"] == "cancelled"


def test_jobs_are_listed_by_status_and_paged(srv):
    c = Client(srv, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    ids = [job(c, ds).json()["id"] for _ in range(3)]
    event(c, ids[0], "e1", "claimed")
    page = c.get("/v1/training-jobs?status=queued&limit=1").json()
    assert [j["id"] for j in page["jobs"]] == [ids[1]] and page["next_offset"] == 1
    page2 = c.get("/v1/training-jobs?status=queued&limit=1&offset=1").json()
    assert [j["id"] for j in page2["jobs"]] == [ids[2]] and page2["next_offset"] is None
    assert_problem(c.get("/v1/training-jobs?status=bogus"), 400)


def stored_job(srv, c, column, value):
    """A job of `c`'s whose stored `column` is then set to `value` behind the Worker's back."""
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    jid = job(c, ds).json()["id"]
    srv.d1_write(f"UPDATE training_jobs SET {column} = '{value}' WHERE id = '{jid}'")
    return jid


def test_an_event_for_a_job_in_a_state_the_code_does_not_know_is_an_internal_error(srv):
    c = Client(srv, unique("tj"))
    jid = stored_job(srv, c, "status", "archived")
    assert_problem(event(c, jid, "e1", "claimed"), 500, "internal")
    assert srv.d1(f"SELECT status FROM training_jobs WHERE id = '{jid}'") == [{"status": "archived"}]


def test_reading_a_job_the_code_cannot_decode_is_500_not_503(srv):
    c = Client(srv, unique("tj"))
    # A state the code does not know (used to be echoed as is, 200).
    archived = stored_job(srv, c, "status", "archived")
    assert_problem(c.get(f"/v1/training-jobs/{archived}"), 500, "internal")
    assert_problem(c.get("/v1/training-jobs"), 500, "internal")
    # A column of the wrong type (used to answer 503 "storage unavailable").
    d = Client(srv, unique("tj"))
    assert_problem(d.get(f"/v1/training-jobs/{stored_job(srv, d, 'version', 'abc')}"), 500, "internal")
    # A stored JSON column that does not parse (used to read as null, 200).
    e = Client(srv, unique("tj"))
    assert_problem(e.get(f"/v1/training-jobs/{stored_job(srv, e, 'hyperparameters', '{oops')}"), 500, "internal")
    # A readable job still reads.
    assert e.get(f"/v1/training-jobs/{job(e, dataset(e, [upload(e, HANDBOOK)], 'chat').json()['dataset_id']).json()['id']}").status == 200


def test_another_tenant_cannot_see_train_on_or_build_from_anything(srv):
    alice, bob = Client(srv, unique("a")), Client(srv, unique("b"))
    doc = upload(alice, HANDBOOK)
    ds = dataset(alice, [doc], "chat").json()["dataset_id"]
    jid = job(alice, ds).json()["id"]
    assert_problem(bob.get(f"/v1/training-data/{ds}"), 404)
    assert_problem(bob.get(f"/v1/training-data/{ds}.jsonl"), 404)
    assert_problem(bob.get(f"/v1/training-jobs/{jid}"), 404)
    assert jid not in [j["id"] for j in bob.get("/v1/training-jobs").json()["jobs"]]
    assert_problem(job(bob, ds), 404)
    assert_problem(dataset(bob, [doc]), 404)
    assert_problem(event(bob, jid, "ev-b", "claimed"), 404)
    assert_problem(post(bob, f"/v1/training-jobs/{jid}/cancel", {}, "k-b"), 404)
    assert alice.get(f"/v1/training-jobs/{jid}").json()["status"] == "queued"


@pytest.fixture(scope="module")
def short_ttl():
    """Keys expire 3 s after their answer."""
    s = Server(IDEMPOTENCY_TTL_SECONDS=3).start()
    yield s
    s.cleanup()


def test_an_event_id_keeps_its_first_answer_after_its_key_expired(short_ttl):
    c = Client(short_ttl, unique("tj"))
    ds = dataset(c, [upload(c, HANDBOOK)], "chat").json()["dataset_id"]
    jid = job(c, ds).json()["id"]
    claimed = event(c, jid, "e1", "claimed")
    assert claimed.status == 200, claimed
    metrics = {"loss": 0.25, "acc": 0.5}
    assert event(c, jid, "e2", "running").status == 200
    prog = event(c, jid, "e3", "progress", step=7, metrics=metrics)
    assert prog.status == 200, prog
    key_state = f"/v1/idempotency/keys/e1?route=/v1/training-jobs/{jid}/events"
    time.sleep(4)
    assert_problem(c.get(key_state), 404)  # the key's record has expired
    # The same event id with another payload is the reused-key problem, as while
    # the key was live; it is not stored, so it does not take the key.
    p = assert_problem(event(c, jid, "e1", "failed", error="boom"), 422, "idempotency-key-reused")
    assert p["idempotency_key"] == "e1"
    assert_problem(event(c, jid, "e3", "progress", step=8, metrics=metrics), 422, "idempotency-key-reused")
    # The job has moved on (running, version 3): the repeats get what their first
    # application answered, not a 409 from the state they would meet now.
    again = event(c, jid, "e1", "claimed")
    assert (again.status, again.body) == (200, claimed.body)
    assert again.json() == {"job_id": jid, "event_id": "e1", "type": "claimed", "from": "queued",
                            "status": "claimed", "version": 1}
    reordered = post(c, f"/v1/training-jobs/{jid}/events",
                     {"metrics": {"acc": 0.5, "loss": 0.25}, "step": 7, "type": "progress", "event_id": "e3"})
    assert (reordered.status, reordered.body) == (200, prog.body)
    replay = event(c, jid, "e1", "claimed")  # the key is live again, with that answer
    assert replay.body == claimed.body and replay.header("idempotent-replayed") == "true"
    got = c.get(f"/v1/training-jobs/{jid}").json()
    assert got["status"] == "running" and got["version"] == 3 and got["progress"]["step"] == 7
    assert [(e["event_id"], e["seq"]) for e in got["events"]] == [("e1", 1), ("e2", 2), ("e3", 3)]
