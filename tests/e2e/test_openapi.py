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
# The four checks issue 13 names; every operation, every check.
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
    assert "https://idemgate.dev/errors/idempotency-key-reused" in doc["info"]["description"]


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
        assert reply.json()["type"] == "https://idemgate.dev/errors/method-not-allowed"
        assert reply.header("allow") == allow, (method, path, reply.headers)
    # The methods it knows keep their answers.
    assert fuzzed.request("GET", "/healthz").status == 200
    assert fuzzed.request("PATCH", "/healthz").status == 405
