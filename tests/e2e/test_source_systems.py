"""The source systems' own documented sequences, replayed against idemgate.

idemgate was specified from five idempotency write-ups; a team moving from one of
them replays its own documented calls first. Each test here replays one system's
sequence in meaning — the paths are idemgate's, the calls, bodies, headers and
expectations are the write-up's — and names the document it follows. GreenLang's
and AccuBooks' are in test_source_systems_ttl.py.
"""

import json
import time
import uuid

import pytest

from conftest import Client, Server, assert_problem, concurrently, unique


@pytest.fixture(scope="module")
def edge(origin):
    """An idemgate in front of the origin stub's functions, keys optional for
    FineFlow's backwards-compatible clients (a keyless call passes straight through)."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_KEY_POLICY="optional", UPSTREAM_TIMEOUT_MS=2000,
               UPSTREAM_FUNCTIONS="process-document,start-training,generate-training-data,echo,flaky").start()
    yield s
    s.cleanup()


def send(client, method, path, body=None, headers=None):
    h = {"authorization": f"Bearer {client.token}", "content-type": "application/json", **(headers or {})}
    return client.server.request(method, path, body, h)


def acme_invoice(vendor="ACME Corp", total="1000.00"):
    """AP Intake's example export data (vendor, number, total as a JSON number),
    with the fields idemgate's quality score requires (date, currency, a line that
    adds up), so the approval is not refused for quality."""
    return {"vendor_name": vendor, "invoice_number": "INV-001", "invoice_date": "2026-11-02",
            "currency": "USD", "total_amount": json.loads(total),
            "line_items": [{"description": "Consulting", "quantity": 1, "unit_price": json.loads(total),
                            "amount": json.loads(total)}]}


def test_ap_intake_stages_approves_with_corrections_posts_and_rolls_back_without_a_review(server):
    """Replays AP Intake & Validation's "Idempotency and Staging Infrastructure
    Implementation" (Aparnap2/AP-intake, docs: Usage Examples → "Idempotent File
    Upload" and "Export Staging Workflow"; API Endpoints → staging):

    upload the same invoice file twice without a key → one ingestion;
    1. POST …/stage {invoice_id, export_format csv, destination_system quickbooks,
       export_data, prepared_by}; 2. GET …/diff; 3. PUT …/approve {approved_by,
       approved_data (vendor and total corrected), change_reason} — straight from
       `prepared`, no review step; 4. POST …/post {posted_by, external_reference
       "QB-12345", export_filename "export_001.csv"}; then POST …/rollback; the
       audit trail with before/after snapshots. No destination is configured, so
       the caller's external reference is the export's.
    """
    tenant = unique("ap")
    user = Client(server, f"user-{uuid.uuid4()}", tenant)
    manager = Client(server, f"manager-{uuid.uuid4()}", tenant, ["approver"])

    # Idempotent file upload: the server derives the key from the file (AP: vendor
    # + file hash + user), so the same invoice uploaded twice is one document.
    pdf_text = {"filename": "invoice.txt", "content_type": "text/plain",
                "content": f"ACME Corp invoice INV-001 total 1000.00 ({unique('f')})"}
    up1, up2 = user.post_document(pdf_text), user.post_document(pdf_text)
    assert up1.status == up2.status == 201 and up1.json()["id"] == up2.json()["id"], (up1, up2)
    assert up2.header("idempotent-replayed") == "true"

    # 1. Stage. AP's body names the preparer; idemgate takes it from the token and
    # accepts the field when it names the caller.
    stage_body = {"invoice_id": str(uuid.uuid4()), "export_format": "csv", "destination_system": "quickbooks",
                  "export_data": acme_invoice(), "prepared_by": user.sub}
    staged = send(user, "POST", "/v1/staging/exports", stage_body, {"idempotency-key": "stage-1"})
    assert staged.status == 201, staged
    export = staged.json()
    eid = export["id"]
    assert export["status"] == "prepared" and export["prepared_by"] == user.sub
    assert export["quality_score"] == 100 and export["original_data"] == acme_invoice()
    again = send(user, "POST", "/v1/staging/exports", stage_body, {"idempotency-key": "stage-1"})
    assert again.header("idempotent-replayed") == "true" and again.json()["id"] == eid

    # 2. Get the diff: nothing approved yet, nothing changed.
    diff = user.get(f"/v1/staging/exports/{eid}/diff")
    assert diff.status == 200 and diff.json()["changes"] == [] and diff.json()["approved"] is False

    # 3. Approve with modifications, from `prepared` (AP Intake has no review step).
    corrected = acme_invoice(vendor="ACME Corporation", total="1100.00")
    approve_body = {"approved_by": manager.sub, "approved_data": corrected,
                    "change_reason": "Corrected vendor name and total amount"}
    path = f"/v1/staging/exports/{eid}/approve"
    forged = send(manager, "PUT", path, {**approve_body, "approved_by": user.sub}, {"idempotency-key": "approve-1"})
    p = assert_problem(forged, 400, "identity-from-token")
    assert "`approved_by`" in p["detail"] and "token" in p["detail"], p
    approved = send(manager, "PUT", path, approve_body, {"idempotency-key": "approve-1"})
    assert approved.status == 200, approved
    a = approved.json()
    assert a["status"] == "approved" and a["approved_by"] == manager.sub and a["reviewed_by"] is None
    assert a["approved_data"] == corrected and a["change_reason"] == "Corrected vendor name and total amount"
    replay = send(manager, "PUT", path, approve_body, {"idempotency-key": "approve-1"})
    assert replay.header("idempotent-replayed") == "true" and replay.body == approved.body

    # 4. Post to the destination system with AP's own reference and file name:
    #    money moves only with a role for it, and never by the export's preparer.
    post_path = f"/v1/staging/exports/{eid}/post"
    refused = send(user, "POST", post_path, {"posted_by": user.sub, "external_reference": "QB-12345"},
                   {"idempotency-key": f"post-{eid}-{user.sub}"})
    assert refused.status == 403 and "poster role" in refused.json()["detail"], refused
    post_body = {"posted_by": manager.sub, "external_reference": "QB-12345", "export_filename": "export_001.csv"}
    posted = send(manager, "POST", post_path, post_body, {"idempotency-key": f"post-{eid}-{manager.sub}"})
    assert posted.status == 200, posted
    pj = posted.json()
    assert pj["status"] == "posted" and pj["posted_by"] == manager.sub
    assert pj["external_reference"] == "QB-12345" and pj["caller_reference"] == "QB-12345"
    assert pj["file"]["name"] == "export_001.csv"
    replay = send(manager, "POST", post_path, post_body, {"idempotency-key": f"post-{eid}-{manager.sub}"})
    assert replay.header("idempotent-replayed") == "true" and replay.body == posted.body
    f = user.get(f"/v1/staging/exports/{eid}/file")
    assert f.status == 200 and f.header("content-disposition") == 'attachment; filename="export_001.csv"'
    assert b"ACME Corporation" in f.body and b"1100" in f.body

    # The diff now shows the field-level changes and the business reason.
    d = user.get(f"/v1/staging/exports/{eid}/diff").json()
    changed = {c["path"]: (c["before"], c["after"]) for c in d["changes"]}
    assert changed["$.vendor_name"] == ("ACME Corp", "ACME Corporation")
    assert changed["$.total_amount"] == (1000.00, 1100.00)
    assert d["change_reason"] == "Corrected vendor name and total amount"

    # 5. Roll back the posted export.
    rolled = send(manager, "POST", f"/v1/staging/exports/{eid}/rollback",
                  {"reason": "Posted to the wrong period", "rolled_back_by": manager.sub},
                  {"idempotency-key": f"rollback-{eid}"})
    assert rolled.status == 200 and rolled.json()["status"] == "rolled_back", rolled

    # The audit trail: one row per step, the approval straight from `prepared`.
    audit = user.get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    assert [(e["event"], e["from"], e["to"], e["actor"]) for e in audit] == [
        ("stage", None, "prepared", user.sub),
        ("approve", "prepared", "approved", manager.sub),
        ("post", "approved", "posted", manager.sub),
        ("rollback", "posted", "rolled_back", manager.sub),
    ]
    assert audit[1]["before"]["prepared_data"]["vendor_name"] == "ACME Corp"
    assert audit[1]["after"]["approved_data"]["vendor_name"] == "ACME Corporation"
    assert audit[2]["detail"]["caller_reference"] == "QB-12345"


def test_fineflow_function_calls_with_x_idempotency_key_replay_the_cached_answer_per_user(edge, origin):
    """Replays FineFlow Foundation's "Idempotency Implementation Summary" (docs/
    IDEMPOTENCY_IMPLEMENTATION_SUMMARY.md: Client Usage, Retry Logic, the tests
    listed under Integration Tests):

    a client generates `idem_<uuid>` and POSTs `/functions/v1/process-document`
    with `Authorization`, `Content-Type: application/json` and `X-Idempotency-Key`,
    body `{"documentId": "abc123"}`; a retry with the same key gets the cached
    answer with `X-Idempotency-Replay: true`; a retry loop of 3 attempts is safe;
    the same key from another user is independent (`UNIQUE (idempotency_key,
    user_id)`); concurrent requests with one key run once; a failed run is not
    cached and is retried; `start-training` and `generate-training-data` behave
    alike; a request without a key still works (optional, backwards compatible);
    the key's status can be read (`get_idempotency_status`).
    """
    user = Client(edge, f"user-{uuid.uuid4()}")
    other = Client(edge, f"user-{uuid.uuid4()}")
    key = f"idem_{uuid.uuid4()}"

    def call(client, name, body, key=None, extra=None):
        h = {"x-idempotency-key": key} if key else {}
        return send(client, "POST", f"/functions/v1/{name}", body, {**h, **(extra or {})})

    before = origin.count("/process-document")
    fresh = call(user, "process-document", {"documentId": "abc123"}, key)
    assert fresh.status == 200, fresh
    assert fresh.header("x-idempotency-replay") is None
    job = fresh.json()["job_id"]

    # Retry logic: up to 3 attempts with the same key, every one the cached answer.
    for _ in range(3):
        r = call(user, "process-document", {"documentId": "abc123"}, key)
        assert r.status == 200 and r.header("x-idempotency-replay") == "true", r
        assert r.json()["job_id"] == job and r.body == fresh.body
    assert origin.count("/process-document") == before + 1

    # Different users, same key: isolated.
    theirs = call(other, "process-document", {"documentId": "abc123"}, key)
    assert theirs.status == 200 and theirs.header("x-idempotency-replay") is None
    assert theirs.json()["job_id"] != job
    assert origin.count("/process-document") == before + 2

    # The key's status (FineFlow's get_idempotency_status).
    status = user.get(f"/v1/idempotency/keys/{key}?route=/functions/v1/process-document").json()
    assert status["state"] == "completed" and status["response_status"] == 200, status

    # Concurrent requests with the same key: one run; the others are told it is in
    # flight (409, Retry-After) and their retry gets the cached answer.
    ckey = f"idem_{uuid.uuid4()}"
    before = origin.count("/start-training")
    replies = concurrently(8, lambda i: call(user, "start-training", {"datasetId": "ds-1"}, ckey))
    assert {r.status for r in replies} <= {200, 409}, replies
    assert origin.count("/start-training") == before + 1
    settled = call(user, "start-training", {"datasetId": "ds-1"}, ckey)
    assert settled.status == 200 and settled.header("x-idempotency-replay") == "true"
    assert all(r.body == settled.body for r in replies if r.status == 200)

    # End-to-end flow with failure: the failed run is not cached; the retry runs.
    fkey = f"idem_{uuid.uuid4()}"
    failed = call(user, "flaky", {"documentId": "abc123"}, fkey)
    assert failed.status == 500
    retried = call(user, "flaky", {"documentId": "abc123"}, fkey)
    assert retried.status == 201 and retried.header("x-idempotency-replay") is None
    cached = call(user, "flaky", {"documentId": "abc123"}, fkey)
    assert cached.status == 201 and cached.header("x-idempotency-replay") == "true"

    # generate-training-data: the same contract.
    gkey = f"idem_{uuid.uuid4()}"
    g1 = call(user, "generate-training-data", {"documentIds": ["abc123"]}, gkey)
    g2 = call(user, "generate-training-data", {"documentIds": ["abc123"]}, gkey)
    assert g1.status == g2.status == 200 and g2.header("x-idempotency-replay") == "true" and g1.body == g2.body

    # Optional for backwards compatibility: without a key, the call still runs.
    before = origin.count("/process-document")
    k1, k2 = call(user, "process-document", {"documentId": "abc123"}), call(user, "process-document", {"documentId": "abc123"})
    assert k1.status == k2.status == 200 and k1.json()["job_id"] != k2.json()["job_id"]
    assert origin.count("/process-document") == before + 2


def test_sahool_event_handler_processes_each_event_once_retries_failures_and_reruns_on_delete(edge, origin):
    """Replays SAHOOL's event idempotency write-ups (shared/libs/events/
    IDEMPOTENCY_GUIDE.md and IDEMPOTENCY_IMPLEMENTATION_SUMMARY.md): a queue
    consumer handles each `EventEnvelope` through idemgate, with the event's
    `event_id` (or its custom `idempotency_key`) as the key:

    first delivery → processed and the result cached; redelivery → the cached
    result, the handler does not run; two consumers at once → one run
    (concurrent processing prevention); a handler failure → not cached (FAILED
    may be retried) and the redelivery runs it; `get_processing_record` → the
    key's state; `delete_record` → `DELETE /v1/idempotency/keys/…` and the next
    delivery runs the handler again.
    """
    consumer = Client(edge, "sahool-field-consumer", unique("sahool"))

    def deliver(envelope, function="echo", extra=None):
        key = envelope.get("idempotency_key") or envelope["event_id"]
        return send(consumer, "POST", f"/functions/v1/{function}", envelope,
                    {"idempotency-key": key, **(extra or {})})

    field_id = unique("field")
    created = {"event_id": str(uuid.uuid4()), "event_type": "field.created", "tenant_id": consumer.tenant,
               "payload": {"field_id": field_id, "name": "North paddock"}}
    before = origin.count("/echo")
    first = deliver(created)
    assert first.status == 200, first
    assert origin.count("/echo") == before + 1

    # At-least-once delivery: the broker redelivers; the handler does not run again,
    # the consumer acks with the cached result.
    for _ in range(3):
        dup = deliver(created)
        assert dup.status == 200 and dup.header("idempotent-replayed") == "true" and dup.body == first.body
    assert origin.count("/echo") == before + 1

    # Two consumers receive one event at the same time: one run, both get its result.
    planted = {"event_id": str(uuid.uuid4()), "event_type": "crop.planted",
               "idempotency_key": f"crop-plant:{consumer.tenant}:{field_id}:2026-11-27",
               "payload": {"field_id": field_id, "crop": "wheat"}}
    before = origin.count("/echo")
    pair = concurrently(2, lambda i: deliver(planted, extra={"prefer": "wait=10"}))
    assert [r.status for r in pair] == [200, 200] and pair[0].body == pair[1].body, pair
    assert origin.count("/echo") == before + 1

    # The handler fails: nothing is cached (SAHOOL: FAILED, may be retried), the
    # consumer nacks, the redelivery runs the handler, later ones get its result.
    charged = {"event_id": str(uuid.uuid4()), "event_type": "payment.charged", "payload": {"amount": "12.00"}}
    before = origin.count("/flaky")
    failed = deliver(charged, "flaky")
    assert failed.status >= 500, failed
    state = consumer.get(f"/v1/idempotency/keys/{charged['event_id']}?route=/functions/v1/flaky")
    assert_problem(state, 404)
    redelivered = deliver(charged, "flaky")
    assert redelivered.status == 201 and redelivered.header("idempotent-replayed") is None, redelivered
    assert deliver(charged, "flaky").header("idempotent-replayed") == "true"
    assert origin.count("/flaky") == before + 2

    # get_processing_record: the key's state.
    record = consumer.get(f"/v1/idempotency/keys/{created['event_id']}?route=/functions/v1/echo")
    assert record.status == 200 and record.json()["state"] == "completed", record

    # delete_record, then retry: the next delivery runs the handler again.
    before = origin.count("/echo")
    released = consumer.delete(f"/v1/idempotency/keys/{created['event_id']}?route=/functions/v1/echo")
    assert released.status == 204, released
    rerun = deliver(created)
    assert rerun.status == 200 and rerun.header("idempotent-replayed") is None
    assert rerun.json()["call"] != first.json()["call"]
    assert origin.count("/echo") == before + 1
    assert deliver(created).header("idempotent-replayed") == "true"
