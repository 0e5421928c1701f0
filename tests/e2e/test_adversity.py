"""Exactly-once under adversity (a live holder's lease, DELETE in flight,
large answers, keys shared across users, the key an origin receives)."""

import threading
import time

import pytest

from conftest import Client, Server, assert_problem, forwarded_key, scope_of, unique


@pytest.fixture(scope="module")
def short_lease(origin):
    """A 2 s lease under a 10 s origin timeout: only renewal keeps a live holder's key."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,sleep,big",
               UPSTREAM_TIMEOUT_MS=10000, IDEMPOTENCY_LEASE_SECONDS=2).start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def capped(origin):
    """Stored answers capped at 100 000 bytes."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="big",
               MAX_STORED_ANSWER_BYTES=100000).start()
    yield s
    s.cleanup()


def call(client, name, body, key=None, extra=None, timeout=60):
    return client.server.request("POST", f"/functions/v1/{name}", body, client.headers(key, extra), timeout=timeout)


def in_background(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("reply", fn()))
    t.start()
    return t, out


def test_a_live_holder_keeps_its_key_past_a_lease_shorter_than_the_origin(short_lease, origin):
    c = Client(short_lease, unique("lease"))
    body = {"seconds": 5, "n": unique("n")}
    before = origin.count("/sleep")
    t, first = in_background(lambda: call(c, "sleep", body, "k-live"))
    time.sleep(2.8)
    second = call(c, "sleep", body, "k-live")
    assert_problem(second, 409, "idempotency-key-in-flight")
    # The lease in storage was renewed: it ends after now, not 2 s after the start.
    state = c.get("/v1/idempotency/keys/k-live?route=/functions/v1/sleep").json()
    assert state["state"] == "processing" and state["lease_expires_at"] > time.time() * 1000, state
    waited = call(c, "sleep", body, "k-live", {"prefer": "wait=10"})
    t.join()
    assert first["reply"].status == 200, first["reply"]
    assert waited.status == 200 and waited.header("idempotent-replayed") == "true"
    assert waited.body == first["reply"].body
    assert origin.count("/sleep") == before + 1


def test_delete_of_a_key_in_flight_is_409_and_no_second_execution_follows(short_lease, origin):
    c = Client(short_lease, unique("del"))
    body = {"seconds": 3, "n": unique("n")}
    before = origin.count("/sleep")
    t, first = in_background(lambda: call(c, "sleep", body, "k-del"))
    time.sleep(0.8)
    p = assert_problem(c.delete("/v1/idempotency/keys/k-del?route=/functions/v1/sleep"), 409,
                       "idempotency-key-in-flight")
    assert p["idempotency_key"] == "k-del"
    after = call(c, "sleep", body, "k-del", {"prefer": "wait=10"})
    t.join()
    assert first["reply"].status == 200
    assert after.status == 200 and after.body == first["reply"].body
    assert origin.count("/sleep") == before + 1
    # Once it finished, the owner may release it, and the next request runs again.
    assert c.delete("/v1/idempotency/keys/k-del?route=/functions/v1/sleep").status == 204
    again = call(c, "sleep", {"seconds": 0, "n": body["n"]}, "k-del")
    assert again.status == 200 and again.header("idempotent-replayed") is None


def test_only_the_owner_or_an_admin_releases_a_users_key(short_lease, origin):
    tenant = unique("org")
    alice = Client(short_lease, unique("alice"), tenant)
    bob = Client(short_lease, unique("bob"), tenant)
    admin = Client(short_lease, unique("admin"), tenant, ["admin"])
    assert call(alice, "echo", {"a": 1}, "k-own").status == 200
    path = f"/v1/idempotency/keys/k-own?route=/functions/v1/echo&subject={alice.sub}"
    assert_problem(bob.delete(path), 403)
    assert_problem(bob.get(path), 403)
    # Without subject= bob names his own key, which does not exist.
    assert_problem(bob.delete("/v1/idempotency/keys/k-own?route=/functions/v1/echo"), 404)
    assert admin.get(path).json()["state"] == "completed"
    assert admin.delete(path).status == 204
    again = call(alice, "echo", {"a": 1}, "k-own")
    assert again.status == 200 and again.header("idempotent-replayed") is None


def test_two_users_of_one_tenant_with_one_key_are_two_keys(short_lease, origin):
    tenant = unique("org")
    alice = Client(short_lease, unique("alice"), tenant)
    bob = Client(short_lease, unique("bob"), tenant)
    before = origin.count("/echo")
    a = call(alice, "echo", {"same": "body"}, "k-shared")
    b = call(bob, "echo", {"same": "body"}, "k-shared")
    assert a.status == b.status == 200
    assert b.header("idempotent-replayed") is None, "bob must never get alice's answer"
    assert a.json()["authorization"] == f"Bearer {alice.token}"
    assert b.json()["authorization"] == f"Bearer {bob.token}"
    assert origin.count("/echo") == before + 2
    # Each replays their own.
    assert call(alice, "echo", {"same": "body"}, "k-shared").body == a.body
    assert call(bob, "echo", {"same": "body"}, "k-shared").body == b.body


def test_the_origin_receives_a_key_derived_from_the_whole_scope(short_lease, origin):
    one = Client(short_lease, unique("u"), unique("tenant-a"))
    two = Client(short_lease, unique("u"), unique("tenant-b"))
    a = call(one, "echo", {"x": 1}, "shared-1").json()["key"]
    b = call(two, "echo", {"x": 1}, "shared-1").json()["key"]
    assert a != b and "shared-1" not in (a, b)
    assert a == forwarded_key(scope_of(one.tenant, one.sub), "POST /functions/v1/echo", "shared-1")
    assert b == forwarded_key(scope_of(two.tenant, two.sub), "POST /functions/v1/echo", "shared-1")


def test_a_3_mb_answer_is_stored_in_chunks_and_replayed_byte_identical(short_lease, origin):
    c = Client(short_lease, unique("big"))
    before = origin.count("/big")
    first = call(c, "big", {"bytes": 3_000_000}, "k-big")
    assert first.status == 200, first
    assert len(first.body) == 3_000_000
    for _ in range(2):
        again = call(c, "big", {"bytes": 3_000_000}, "k-big")
        assert again.status == 200 and again.header("idempotent-replayed") == "true"
        assert again.body == first.body
    assert origin.count("/big") == before + 1
    # D1's record holds it too, in chunks under the row limit.
    deadline = time.time() + 20
    while True:
        rows = short_lease.d1(
            f"SELECT body_chunks FROM idempotency_records WHERE key = 'k-big' AND scope = '{scope_of(c.tenant, c.sub)}'")
        if rows or time.time() > deadline:
            break
        time.sleep(0.5)
    assert rows and rows[0]["body_chunks"] == 4, rows


def test_an_answer_over_the_cap_is_a_final_502_and_never_runs_again(capped, origin):
    c = Client(capped, unique("cap"))
    before = origin.count("/big")
    first = call(c, "big", {"bytes": 200_000}, "k-cap")
    p = assert_problem(first, 502, "answer-too-large")
    assert "100000" in p["detail"]
    again = call(c, "big", {"bytes": 200_000}, "k-cap")
    assert_problem(again, 502, "answer-too-large")
    assert again.header("idempotent-replayed") == "true"
    assert origin.count("/big") == before + 1
    # Just under the cap is kept as it is.
    fits = call(c, "big", {"bytes": 99_000}, "k-fits")
    assert fits.status == 200 and len(fits.body) == 99_000
    assert call(c, "big", {"bytes": 99_000}, "k-fits").body == fits.body


def test_the_default_cap_is_8_mib_exactly(short_lease, origin):
    c = Client(short_lease, unique("cap8"))
    at_cap = call(c, "big", {"bytes": 8 * 1024 * 1024}, "k-8mib")
    assert at_cap.status == 200 and len(at_cap.body) == 8 * 1024 * 1024
    again = call(c, "big", {"bytes": 8 * 1024 * 1024}, "k-8mib")
    assert again.header("idempotent-replayed") == "true" and again.body == at_cap.body
    over = call(c, "big", {"bytes": 8 * 1024 * 1024 + 1}, "k-8mib-1")
    assert_problem(over, 502, "answer-too-large")
