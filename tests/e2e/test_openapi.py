"""GET /openapi.json: a valid OpenAPI 3.1 document, and the running Worker
conforms to it under schemathesis' fuzzing (every operation, a bounded budget)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.versions.shortcuts import get_spec_version

from conftest import ROOT, SECRET, Server
from jwt import token as make_token

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Four schemathesis checks (no 5xx, documented statuses, content types, schemas); every operation, every check.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Examples per operation (and per generation mode): what fits a few minutes on 2 cores.
MAX_EXAMPLES = int(os.environ.get("IDEMGATE_FUZZ_EXAMPLES", "25"))
# The whole run must end within this, or the test fails (it never hangs).
RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def fuzzed():
    """Its own server: the fuzzer writes thousands of rows nobody else should see."""
    s = Server(IDEMPOTENCY_LEASE_SECONDS=20).start()
    yield s
    s.cleanup()


def served_document(server):
    reply = server.request("GET", "/openapi.json")
    assert reply.status == 200, reply
    assert reply.header("content-type").startswith("application/json")
    return reply.json()


def test_openapi_json_is_served_without_auth_and_validates_as_openapi_3_1(fuzzed):
    doc = served_document(fuzzed)
    assert doc["openapi"].startswith("3.1.")
    assert get_spec_version(doc).major == "3" and get_spec_version(doc).minor == "1"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    # The contract's headers and the problem type are there.
    text = json.dumps(doc)
    for name in ("Idempotency-Key", "X-Idempotency-Key", "Prefer", "Idempotent-Replayed",
                 "X-Idempotency-Replay", "Retry-After", "Preference-Applied", "Idempotency-Expires"):
        assert f'"{name}"' in text, name
    assert doc["components"]["securitySchemes"]["bearerAuth"]["bearerFormat"] == "JWT"
    assert "`/errors/idempotency-key-reused` (422)" in doc["info"]["description"]
    # Served from the committed file, byte for byte.
    assert fuzzed.request("GET", "/openapi.json").body == (ROOT / "openapi.json").read_bytes()


def test_every_operation_conforms_to_the_document_under_schemathesis(fuzzed, tmp_path):
    doc = served_document(fuzzed)
    operations = sum(len(item) for item in doc["paths"].values())
    assert operations > 30
    token = make_token(SECRET, "fuzzer", "fuzz-tenant", ["approver", "admin"], ttl=3 * 3600)
    cmd = [
        str(SCHEMATHESIS), "run", f"http://127.0.0.1:{fuzzed.port}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", "13",
        "--generation-deterministic",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--workers", "1",
        "--request-timeout", "30",
        "--continue-on-failure",
        "--no-color",
        "--header", f"Authorization: Bearer {token}",
        "--report", "junit",
        "--report-dir", str(tmp_path),
    ]
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"schemathesis did not finish within {RUN_TIMEOUT_S} s: {(e.stdout or '')[-4000:]}")
    elapsed = time.monotonic() - started
    output = out.stdout + out.stderr
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target" / "schemathesis.log").write_text(output)
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    print(f"\nschemathesis ({elapsed:.0f} s, {operations} operations): "
          f"{summary[-1].strip(' =') if summary else '(no summary line)'}")
    assert out.returncode == 0, output[-12000:]
    # Every operation of the document was exercised (schemathesis leaves out the
    # document's own URL, GET /openapi.json, which the test above checks).
    junit = next(tmp_path.glob("junit*.xml")).read_text()
    tested = set(re.findall(r'testcase name="([A-Z]+ /[^"]*)"', junit))
    documented = {f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item} - {"GET /openapi.json"}
    assert tested == documented, (documented - tested, tested - documented)


def test_an_unknown_method_is_405_not_taken_for_a_get(fuzzed):
    """Found by schemathesis' method probing: workers-rs reads any method it does not
    know (QUERY, PROPFIND, …) as GET, so `QUERY /console` answered the page and
    `QUERY` on an export read it. Now it is refused like any method the route does not
    allow: 405 with the route's Allow. (A token workerd itself does not know, such as
    FOO, never reaches the Worker: workerd answers it.)"""
    token = make_token(SECRET, "prober", "probe-tenant", ["admin"])
    auth = {"authorization": f"Bearer {token}"}
    for method, path, allow in [("QUERY", "/console", "GET, HEAD"), ("PROPFIND", "/healthz", "GET, HEAD"),
                                ("QUERY", "/openapi.json", "GET, HEAD"),
                                ("QUERY", "/v1/staging/exports", "GET, HEAD, POST, OPTIONS"),
                                ("PROPFIND", "/v1/idempotency/stats", "GET, HEAD, OPTIONS")]:
        reply = fuzzed.request(method, path, None, auth)
        assert reply.status == 405, (method, path, reply)
        assert reply.header("content-type").startswith("application/problem+json")
        assert reply.json()["type"] == "/errors/method-not-allowed"
        assert reply.header("allow") == allow, (method, path, reply.headers)
    # The methods it knows keep their answers.
    assert fuzzed.request("GET", "/healthz").status == 200
    assert fuzzed.request("PATCH", "/healthz").status == 405


def test_each_resource_s_answers_along_a_full_workflow_conform_to_the_document(fuzzed):
    """The fuzzer mostly meets 400 and 404 (random ids, random bodies); this walks the
    happy paths — and a replay, a reused key, a key's state and its release — and runs
    the same four checks on every answer, so each documented 2xx schema is checked
    against a real answer."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    base = f"http://127.0.0.1:{fuzzed.port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    alice = make_token(SECRET, "alice", "flow-tenant", ["admin"])
    bob = make_token(SECRET, "bob", "flow-tenant", ["approver"])
    seen = {}

    def call(op_id, want, token=alice, idem=None, body=None, query=None, **path):
        extra = {"body": body, "media_type": "application/json"} if body is not None else {}
        case = schema.find_operation_by_id(op_id).Case(
            path_parameters=path or None, query=query,
            headers={"Idempotency-Key": idem} if idem else None, **extra)
        headers = {"Authorization": f"Bearer {token}"}
        response = case.call(base_url=base, headers=headers, timeout=30)
        assert response.status_code == want, (op_id, response.status_code, response.text[:500])
        case.validate_response(response, checks=checks, headers=headers)
        seen[op_id] = response.status_code
        return response

    suffix = str(time.time_ns())
    doc_body = {"filename": "a.md", "content_type": "text/markdown", "content": "# Title\n\nSome words here. " * 20}
    doc = call("uploadDocument", 201, idem=f"doc-{suffix}", body=doc_body).json()
    replay = call("uploadDocument", 201, idem=f"doc-{suffix}", body=doc_body)
    assert replay.headers["idempotent-replayed"] in ("true", ["true"])
    call("uploadDocument", 422, idem=f"doc-{suffix}", body={**doc_body, "filename": "b.md"})
    call("getDocument", 200, id=doc["id"])
    call("listChunks", 200, id=doc["id"], query={"limit": 2})
    dataset = call("createDataset", 201, idem=f"ds-{suffix}", body={"document_ids": [doc["id"]], "format": "chunks"}).json()
    call("getDataset", 200, id=dataset["dataset_id"])
    call("getDatasetExamples", 200, id=dataset["dataset_id"])
    job = call("createJob", 201, idem=f"job-{suffix}",
               body={"dataset_id": dataset["dataset_id"], "base_model": "m",
                     "hyperparameters": {"epochs": 1, "learning_rate": 0.1, "batch_size": 4}}).json()
    call("reportJobEvent", 200, body={"event_id": f"ev-{suffix}", "type": "claimed"}, id=job["id"])
    call("getJob", 200, id=job["id"])
    call("listJobs", 200, query={"status": "running"})
    call("cancelJob", 200, idem=f"cancel-{suffix}", body={"reason": "enough"}, id=job["id"])

    invoice = {"vendor_name": "Acme", "invoice_number": "INV-1", "invoice_date": "2026-10-31", "currency": "EUR",
               "total_amount": "10.00",
               "line_items": [{"description": "x", "quantity": "1", "unit_price": "10.00", "amount": "10.00"}]}
    stage = {"invoice_id": f"inv-{suffix}", "export_format": "csv", "destination_system": "erp",
             "export_data": invoice}
    export = call("stageExport", 201, idem=f"stage-{suffix}", body=stage).json()
    call("reviewExport", 200, idem=f"review-{suffix}", body={"comments": "ok"}, id=export["id"])
    call("approveExport", 403, idem=f"approve-self-{suffix}", token=make_token(SECRET, "alice", "flow-tenant", ["approver"]),
         body={}, id=export["id"])
    call("approveExport", 200, token=bob, idem=f"approve-{suffix}",
         body={"approved_data": {**invoice, "total_amount": "10.00"}, "change_reason": "checked"}, id=export["id"])
    call("getExportDiff", 200, id=export["id"])
    call("getExportPreview", 200, id=export["id"])
    # Money moves with a role for it: alice (admin, the preparer) may not post.
    call("postExport", 403, idem=f"post-self-{suffix}", body={}, id=export["id"])
    call("postExport", 200, token=bob, idem=f"post-{suffix}", body={"external_reference": "QB-1"}, id=export["id"])
    call("getExportFile", 200, id=export["id"])
    call("rollbackExport", 403, idem=f"rollback-self-{suffix}", body={"reason": "undo"}, id=export["id"])
    call("rollbackExport", 200, token=bob, idem=f"rollback-{suffix}", body={"reason": "undo"}, id=export["id"])
    call("rejectExport", 409, token=bob, idem=f"reject-{suffix}", body={"reason": "late"}, id=export["id"])
    call("getExport", 200, id=export["id"])
    call("getExportAudit", 200, id=export["id"])
    call("listExports", 200, query={"status": "rolled_back"})
    batch = call("stageBatch", 201, idem=f"batch-{suffix}", body={"exports": [stage, {"invoice_id": ""}]}).json()
    call("getBatch", 200, id=batch["batch_id"])

    call("getKeyState", 200, query={"route": "/v1/documents"}, **{"key": f"doc-{suffix}"})
    call("releaseKey", 204, query={"route": "/v1/documents"}, **{"key": f"doc-{suffix}"})
    call("getKeyState", 404, query={"route": "/v1/documents"}, **{"key": f"doc-{suffix}"})
    call("getIdempotencyStats", 200)
    call("getMetrics", 200)
    call("healthz", 200)
    call("console", 200)
    call("consoleScript", 200)
    call("consoleStyle", 200)
    assert len(seen) >= 30, sorted(seen)
