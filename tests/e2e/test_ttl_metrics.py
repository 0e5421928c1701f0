"""The TTL policy, the Idempotency-Expires header, a configuration that does not
parse, and GET /metrics (docs/contract.md, "Stored answers and TTLs";
docs/operations.md, "Metrics")."""

import math
import threading
import time
from email.utils import parsedate_to_datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Client, Server, assert_problem, scope_of, unique

ROUTE_TTLS = "POST /functions/v1/{name}=60,/functions/v1/echo=4,/v1/documents=120"


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,reject,sleep",
               IDEMPOTENCY_TTL_SECONDS=600, IDEMPOTENCY_TTL_4XX_SECONDS=3,
               IDEMPOTENCY_ROUTE_TTLS=ROUTE_TTLS, IDEMPOTENCY_LEASE_SECONDS=20).start()
    yield s
    s.cleanup()


def expires(reply):
    """The Idempotency-Expires header as epoch seconds (it must be an HTTP-date)."""
    value = reply.header("idempotency-expires")
    assert value and value.endswith(" GMT"), reply.headers
    return parsedate_to_datetime(value).timestamp()


def record_expiry(srv, tenant, sub, route, key, timeout=10):
    """The D1 record's expires_at (ms), waiting for a record written behind its answer."""
    scope = scope_of(tenant, sub)
    sql = (f"SELECT expires_at FROM idempotency_records WHERE scope = '{scope}' "
           f"AND route = '{route}' AND key = '{key}'")
    deadline = time.time() + timeout
    while True:
        rows = srv.d1(sql)
        if rows or time.time() > deadline:
            assert rows, f"no record for {route} {key}"
            return rows[0]["expires_at"]
        time.sleep(0.3)


def call(c, name, body, key):
    return c.server.request("POST", f"/functions/v1/{name}", body, c.headers(key))


def test_every_stored_answer_states_its_expiry_on_first_execution_replay_and_key_state(srv, origin):
    c = Client(srv, unique("alice"), unique("acme"))
    key = unique("k")
    before = time.time()
    first = call(c, "echo", {"n": 1}, key)
    assert first.status == 200, first
    at = expires(first)
    # /functions/v1/echo is named on its own: 4 s, not its template's 60 s.
    assert before + 3 <= at <= time.time() + 5, (before, at)
    replay = call(c, "echo", {"n": 1}, key)
    assert replay.header("idempotent-replayed") == "true"
    assert replay.header("idempotency-expires") == first.header("idempotency-expires")
    state = c.get(f"/v1/idempotency/keys/{key}?route=/functions/v1/echo")
    assert state.status == 200, state
    assert state.json()["expires"] == first.header("idempotency-expires")
    assert state.header("idempotency-expires") == first.header("idempotency-expires")
    # The object's slot and D1's record agree, and the header states exactly that.
    d1_ms = record_expiry(srv, c.tenant, c.sub, "POST /functions/v1/echo", key)
    assert math.ceil(d1_ms / 1000) == at
    assert state.json()["expires_at"] == d1_ms
    # After it the key is new: the origin runs again, with a new expiry.
    calls = origin.count("/echo")
    time.sleep(max(0.0, at - time.time()) + 0.5)
    again = call(c, "echo", {"n": 1}, key)
    assert again.status == 200 and again.header("idempotent-replayed") is None, again
    assert origin.count("/echo") == calls + 1
    assert expires(again) > at


def test_the_most_specific_route_ttl_wins_and_4xx_answers_expire_sooner(srv):
    c = Client(srv, unique("bob"), unique("acme"))
    now = time.time()
    # The template's TTL for a function not named on its own.
    r = call(c, "sleep", {"seconds": 0}, unique("k"))
    assert r.status == 200, r
    assert now + 58 <= expires(r) <= time.time() + 61
    # A route of its own.
    doc = {"filename": "a.txt", "content_type": "text/plain", "content": unique("text")}
    r = c.post_document(doc, unique("k"))
    assert r.status == 201, r
    assert now + 118 <= expires(r) <= time.time() + 121
    # A stored 4xx: IDEMPOTENCY_TTL_4XX_SECONDS, whatever its route's TTL.
    key = unique("k")
    r = call(c, "reject", {"order": 1}, key)
    assert r.status == 422, r
    assert now + 2 <= expires(r) <= time.time() + 4
    d1_ms = record_expiry(srv, c.tenant, c.sub, "POST /functions/v1/reject", key)
    assert math.ceil(d1_ms / 1000) == expires(r)


def test_a_corrected_retry_reuses_its_key_once_the_4xx_answer_expires(srv):
    c = Client(srv, unique("carol"), unique("acme"))
    key = unique("k")
    broken = {"filename": "d.json", "content_type": "application/json", "content": "{not json"}
    fixed = {"filename": "d.json", "content_type": "application/json", "content": '{"ok": true}'}
    first = c.post_document(broken, key)
    assert first.status == 400, first
    # Within the 4xx TTL the answer is replayed, and the key is bound to that payload.
    assert c.post_document(broken, key).header("idempotent-replayed") == "true"
    assert_problem(c.post_document(fixed, key), 422, "idempotency-key-reused")
    d1_ms = record_expiry(srv, c.tenant, c.sub, "POST /v1/documents", key)
    assert math.ceil(d1_ms / 1000) == expires(first)
    time.sleep(max(0.0, expires(first) - time.time()) + 0.5)
    retried = c.post_document(fixed, key)
    assert retried.status == 201, retried
    # The success keeps the route's TTL (120 s), not the 4xx one.
    assert expires(retried) >= time.time() + 115


def test_a_setting_that_does_not_parse_refuses_every_request_naming_it():
    s = Server(IDEMPOTENCY_ROUTE_TTLS="/v1/documents=604800,/v1/nope=60",
               IDEMPOTENCY_TTL_4XX_SECONDS="0").start(ready_status=500)
    try:
        c = Client(s, unique("alice"))
        for reply in (s.request("GET", "/healthz"), c.post_document({"filename": "a.txt"}, unique("k")),
                      c.get("/metrics")):
            p = assert_problem(reply, 500, "misconfigured")
            assert "IDEMPOTENCY_ROUTE_TTLS" in p["detail"] and "IDEMPOTENCY_TTL_4XX_SECONDS" in p["detail"], p
            assert "/v1/nope" not in p["detail"], "values and reasons go to the log, not to callers"
        deadline = time.time() + 10
        while True:
            log = s.log_path.read_text()
            if ("CONFIGURATION ERROR" in log and "no keyed route" in log) or time.time() > deadline:
                break
            time.sleep(0.3)
        assert "CONFIGURATION ERROR" in log, "./x dev says so once the server answers"
        assert '"/v1/nope" is no keyed route' in log, "the Worker logs the reason"
        assert s.d1_value("SELECT count(*) FROM idempotency_records") == 0
    finally:
        s.cleanup()


def scrape(c):
    r = c.get("/metrics")
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/plain; version=0.0.4"), r.headers
    samples = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def wait_for(fn, want, timeout=10):
    """Counters are written behind the answers (about 200 ms later): poll."""
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got == want or time.time() > deadline:
            return got
        time.sleep(0.3)


def test_metrics_in_prometheus_format_per_tenant_by_route_template(srv, origin):
    tenant = unique("ledger")
    admin = Client(srv, unique("admin"), tenant, ["admin"])
    user = Client(srv, unique("user"), tenant)
    assert_problem(user.get("/metrics"), 403)
    assert_problem(srv.request("GET", "/metrics"), 401)
    fn = "POST /functions/v1/{name}"
    a, b = unique("a"), unique("b")
    assert call(user, "echo", {"x": 1}, a).status == 200
    assert call(user, "echo", {"x": 1}, a).header("idempotent-replayed") == "true"
    assert call(user, "reject", {"x": 2}, b).status == 422
    assert_problem(call(user, "echo", {"x": 3}, a), 422, "idempotency-key-reused")
    slow = unique("slow")
    t = threading.Thread(target=lambda: call(user, "sleep", {"seconds": 1.5}, slow))
    t.start()
    time.sleep(0.6)
    assert_problem(call(user, "sleep", {"seconds": 1.5}, slow), 409)
    t.join()
    assert user.delete(f"/v1/idempotency/keys/{b}?route=/functions/v1/reject").status == 204
    want = {"executions": 3, "replays": 1, "mismatches": 1, "conflicts": 1, "released": 1, "takeovers": 0}

    def counts():
        s = scrape(admin)
        return {
            "executions": value(s, "idemgate_executions_total", route=fn),
            "replays": value(s, "idemgate_replays_total", route=fn),
            "mismatches": value(s, "idemgate_mismatches_total", route=fn),
            "conflicts": value(s, "idemgate_conflicts_total", route=fn),
            "released": value(s, "idemgate_keys_released_total", route=fn),
            "takeovers": value(s, "idemgate_lease_takeovers_total", route=fn),
        }

    assert wait_for(counts, want) == want
    # A holder that dies (a panic resets the object) is taken over by the retry.
    # (A panic also resets the isolate's unwritten counts: hence the wait above.)
    dead = unique("dead")
    hook = user.headers(dead, {"x-idemgate-test-fail": "panic"})
    assert srv.request("POST", "/functions/v1/echo", {"x": 4}, hook).status == 500
    assert call(user, "echo", {"x": 4}, dead).status == 200
    want.update(executions=4, takeovers=1)
    assert wait_for(counts, want) == want
    # Live records by template and status (written behind the answers, through
    # the record mirrors: poll): the released 422 is gone.
    assert wait_for(lambda: value(scrape(admin), "idemgate_records", route=fn, status="200"), 3) == 3
    s = scrape(admin)
    assert value(s, "idemgate_records", route=fn, status="422") == 0
    # Histograms: one observation per execution and per replay, cumulative buckets.
    executed = dict(route=fn, outcome="executed")
    assert value(s, "idemgate_request_duration_seconds_count", **executed) == 4
    assert value(s, "idemgate_request_duration_seconds_bucket", le="+Inf", **executed) == 4
    assert value(s, "idemgate_request_duration_seconds_sum", **executed) > 1.0  # the 1.5 s sleep
    assert value(s, "idemgate_request_duration_seconds_count", route=fn, outcome="replayed") == 1
    # Another tenant's admin sees none of it.
    other = scrape(Client(srv, unique("admin"), unique("other"), ["admin"]))
    assert value(other, "idemgate_executions_total", route=fn) == 0
    assert not [k for k in other if k[0] == "idemgate_records"]


def test_stats_and_metrics_group_per_job_routes_by_their_template(srv):
    tenant = unique("train")
    c = Client(srv, unique("trainer"), tenant, ["admin"])
    doc = c.post_document({"filename": "h.md", "content_type": "text/markdown",
                           "content": "# T\n\n" + "Some words in a section. " * 10}, unique("d"))
    assert doc.status == 201, doc
    ds = srv.request("POST", "/v1/training-data", {"document_ids": [doc.json()["id"]], "format": "chunks"},
                     c.headers(unique("ds")))
    assert ds.status == 201, ds
    template = "POST /v1/training-jobs/{id}/events"
    for _ in range(2):
        job = srv.request("POST", "/v1/training-jobs",
                          {"dataset_id": ds.json()["dataset_id"], "base_model": "m",
                           "hyperparameters": {"epochs": 1, "learning_rate": 0.1, "batch_size": 1}},
                          c.headers(unique("job")))
        assert job.status == 201, job
        path = f"/v1/training-jobs/{job.json()['id']}/events"
        for _ in range(2):  # the second is a replay
            r = srv.request("POST", path, {"event_id": "ev-claim", "type": "claimed"}, c.headers())
            assert r.status == 200, r

    def stats_routes():
        routes = c.get("/v1/idempotency/stats").json()["routes"]
        return sorted(r for r in routes if "training-jobs/" in r), routes.get(template, {}).get("replayed")

    assert wait_for(stats_routes, ([template], 2)) == ([template], 2)
    routes = c.get("/v1/idempotency/stats").json()["routes"]
    assert routes[template]["completed"] == 2 and routes[template]["executed"] == 2
    s = scrape(c)
    assert value(s, "idemgate_records", route=template, status="200") == 2
    assert value(s, "idemgate_replays_total", route=template) == 2
    assert not [k for k in s if "job_" in str(k)], "no series per job id"
