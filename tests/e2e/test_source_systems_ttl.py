"""Two source systems' documented idempotency sequences, replayed in meaning
against idemgate's paths: GreenLang's pipelines (TTL policy) and
AccuBooks' exactly-once ledger (metrics). The other source systems are in
test_source_systems.py. TTLs are scaled from hours and minutes to seconds."""

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Client, Server, assert_problem, unique

# GreenLang: results kept for the operation's TTL (ttl_seconds=3600 → 8 s here),
# failed operations for 5 minutes (→ 2 s here), everything else the default.
SUCCESS_TTL, FAILED_TTL = 8, 2


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="emissions,ledger,flaky",
               IDEMPOTENCY_TTL_SECONDS=600, IDEMPOTENCY_TTL_4XX_SECONDS=FAILED_TTL,
               IDEMPOTENCY_ROUTE_TTLS=f"/functions/v1/emissions={SUCCESS_TTL}",
               IDEMPOTENCY_LEASE_SECONDS=20).start()
    yield s
    s.cleanup()


def post(c, name, body, key=None, extra=None):
    return c.server.request("POST", f"/functions/v1/{name}", body, c.headers(key, extra))


def expires(reply):
    return parsedate_to_datetime(reply.header("idempotency-expires")).timestamp()


def greenlang_key(operation, inputs):
    """GreenLang's IdempotencyKey: `operation_name:` and 32 hex chars of the SHA-256
    of the normalized (sorted) inputs, with the caller's context."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"{operation}:{digest[:32]}"


def test_greenlang_pipeline_idempotency_sequence(srv, origin):
    """Replays GreenLang's "Pipeline Idempotency Implementation Summary"
    (akshay-greenlang/Code-V1_GreenLang, greenlang/pipeline/idempotency.py's
    write-up): a deterministic key (operation + hash of inputs) → the first call
    executes, the second returns the cached result; the status shows SUCCESS and
    the TTL remaining; concurrent calls are prevented from running twice (lock,
    retry on conflict); a failed operation is cached with the shorter TTL (5 min)
    and then retried; an expired result runs again.

    One documented call differs on purpose: GreenLang's "custom key grouping"
    (the same key for different inputs returns the first result) is, under
    idemgate's contract (docs/contract.md, as Stripe and the IETF draft), a key reused
    with another payload: 422, nothing runs."""
    c = Client(srv, unique("pipeline"), unique("greenlang"))
    inputs = {"activity": "boiler", "fuel_liters": 100, "run": unique("r")}
    key = greenlang_key("calculate_emissions", inputs)
    calls = origin.count("/emissions")

    # result1 = process_emissions(data) executes; result2 = ... returns the cached result.
    before = time.time()
    result1 = post(c, "emissions", inputs, key)
    assert result1.status == 200, result1
    result2 = post(c, "emissions", inputs, key)
    assert result2.body == result1.body and result2.header("idempotent-replayed") == "true"
    assert origin.count("/emissions") == calls + 1
    # The per-operation TTL: this function's own, not the default's 600 s.
    assert before + SUCCESS_TTL - 1 <= expires(result1) <= time.time() + SUCCESS_TTL + 1
    assert expires(result2) == expires(result1)

    # get_idempotency_status(): SUCCESS and the TTL remaining.
    status = c.get(f"/v1/idempotency/keys/{key}?route=/functions/v1/emissions")
    assert status.status == 200, status
    s = status.json()
    assert s["state"] == "completed" and s["response_status"] == 200
    remaining = s["expires_at"] / 1000 - time.time()
    assert 0 < remaining <= SUCCESS_TTL
    assert s["expires"] == result1.header("idempotency-expires")

    # Custom key grouping: another input under the same key is refused (see the docstring).
    assert_problem(post(c, "emissions", {**inputs, "fuel_liters": 5}, key), 422, "idempotency-key-reused")

    # Concurrent execution prevention, retry_on_conflict: one run, the same result for all.
    other = {**inputs, "run": unique("r")}
    k2 = greenlang_key("calculate_emissions", other)
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda _: post(c, "emissions", other, k2, {"prefer": "wait=10"}), range(8)))
    assert {r.status for r in replies} == {200}
    assert len({r.json()["execution_id"] for r in replies}) == 1
    # Waiters answered by the key's object state the same expiry as the executor.
    assert len({r.header("idempotency-expires") for r in replies}) == 1
    assert origin.count("/emissions") == calls + 2

    # fail_operation: a failed operation is cached with the shorter TTL...
    bad = {"activity": "boiler", "fuel_liters": "lots", "run": unique("r")}
    kf = greenlang_key("calculate_emissions", bad)
    failed = post(c, "emissions", bad, kf)
    assert failed.status == 422, failed
    assert expires(failed) <= time.time() + FAILED_TTL + 1
    assert post(c, "emissions", bad, kf).header("idempotent-replayed") == "true"
    assert origin.count("/emissions") == calls + 3
    # ... and once it expires, the retry runs the operation again.
    time.sleep(max(0.0, expires(failed) - time.time()) + 0.5)
    retried = post(c, "emissions", bad, kf)
    assert retried.status == 422 and retried.header("idempotent-replayed") is None
    assert origin.count("/emissions") == calls + 4

    # is_expired: after the operation's TTL the result is computed anew.
    time.sleep(max(0.0, expires(result1) - time.time()) + 0.5)
    fresh = post(c, "emissions", inputs, key)
    assert fresh.status == 200 and fresh.header("idempotent-replayed") is None
    assert fresh.json()["execution_id"] != result1.json()["execution_id"]
    assert origin.count("/emissions") == calls + 5


def scrape(c):
    r = c.get("/metrics")
    assert r.status == 200, r
    out = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_accubooks_exactly_once_ledger_sequence(srv, origin):
    """Replays AccuBooks' "Idempotency Framework – Complete Implementation Summary",
    "Financial Write-Path Contract" and "Idempotent Write Observability &
    Operations Guide": every financial write requires an Idempotency-Key; 500
    concurrent createPayment requests with one key give exactly 1 new write and
    499 replays, and the Prometheus metrics at /metrics say so
    (idempotent_writes_total / _replayed_total → idemgate_executions_total /
    idemgate_replays_total, the duration histogram for the P95 panel); tenants are
    isolated (the deterministic id includes the company); a failed write is
    counted as a failure and safe to retry; a key reused with another payload is
    the "idempotency key collision" alert (idemgate_mismatches_total); and the
    exactly-once audit query finds no duplicate.

    AccuBooks answers a replay 200 where the first was 201; idemgate replays the
    stored 201 with Idempotent-Replayed: true (docs/contract.md, "Headers")."""
    company = unique("company")
    admin = Client(srv, unique("controller"), company, ["admin"])
    clerk = Client(srv, unique("clerk"), company)
    route = "POST /functions/v1/{name}"
    payment = {"invoice_id": unique("inv"), "lines": [
        {"account": "1200", "credit": 10000}, {"account": "1050", "debit": 10000}]}

    # The contract: no Idempotency-Key, no financial write.
    assert_problem(post(clerk, "ledger", payment), 400, "idempotency-key-required")

    # 500 concurrent createPayment requests, one key: one new write, 499 replays.
    key = unique("pay")
    calls = origin.count("/ledger")
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda _: post(clerk, "ledger", payment, key, {"prefer": "wait=10"}), range(500)))
    assert {r.status for r in replies} == {201}, {r.status for r in replies}
    assert len({r.body for r in replies}) == 1, "every caller gets the same entry"
    assert sum(r.header("idempotent-replayed") == "true" for r in replies) == 499
    assert origin.count("/ledger") == calls + 1

    # Tenant isolation: another company's same key is its own write.
    other = Client(srv, unique("clerk"), unique("company"), ["admin"])
    theirs = post(other, "ledger", payment, key)
    assert theirs.status == 201 and theirs.header("idempotent-replayed") is None
    assert theirs.json()["entry_id"] != replies[0].json()["entry_id"]
    assert origin.count("/ledger") == calls + 2

    # A failed write (the accounting backend 5xx) is not stored: the retry runs.
    kf = unique("flaky")
    assert post(clerk, "flaky", payment, kf).status == 500
    assert post(clerk, "flaky", payment, kf).status == 201
    # Idempotency key collision: same key, another payload.
    assert_problem(post(clerk, "ledger", {**payment, "invoice_id": "other"}, key), 422, "idempotency-key-reused")

    # The operations guide's panels, from /metrics (counters and the records of
    # origin answers are written behind: poll).
    want = {"executions": 2, "replays": 499, "failures": 1, "mismatches": 1, "records": 2}
    deadline = time.time() + 15
    while True:
        s = scrape(admin)
        got = {"executions": metric(s, "idemgate_executions_total", route=route),
               "replays": metric(s, "idemgate_replays_total", route=route),
               "failures": metric(s, "idemgate_execution_failures_total", route=route),
               "mismatches": metric(s, "idemgate_mismatches_total", route=route),
               "records": metric(s, "idemgate_records", route=route, status="201")}
        if got == want or time.time() > deadline:
            break
        time.sleep(0.5)
    assert got == want, got
    # Replay rate = replays / (executions + replays); the P95 panel's histogram is there.
    assert got["replays"] / (got["executions"] + got["replays"]) > 0.99
    new = dict(route=route, outcome="executed")
    assert metric(s, "idemgate_request_duration_seconds_count", **new) == 2
    assert metric(s, "idemgate_request_duration_seconds_bucket", le="+Inf", **new) == 2
    assert metric(s, "idemgate_request_duration_seconds_count", route=route, outcome="replayed") == 499
    assert metric(s, "idemgate_records", route=route, status="201") == 2
    # The other company's view has its own single write only.
    theirs_s = scrape(other)
    assert metric(theirs_s, "idemgate_executions_total", route=route) == 1
    assert metric(theirs_s, "idemgate_replays_total", route=route) == 0

    # "Verify exactly-once execution: should return 0 rows (no duplicates)."
    dupes = srv.d1("SELECT scope, route, key, count(*) AS n FROM idempotency_records "
                   "GROUP BY scope, route, key HAVING count(*) > 1")
    assert dupes == []
