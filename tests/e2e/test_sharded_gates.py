"""KEYGATE_SHARDS=N: a tenant's keys are hashed into N long-lived gate objects
instead of one object per key. Each key still has its own slot, lease, waiters
and alarm time inside the shared object: one key in flight never blocks another,
keys expire apart, a crash takes over only the leases it killed, and an object
whose keys all expired drops its database like a per-key one."""

import threading
import time

import pytest

from conftest import Client, Server, assert_problem, unique
from test_storage_cleanup import EMPTY, objects


def call(client, name, key, body=None, extra=None, timeout=60):
    return client.server.request("POST", f"/functions/v1/{name}", body or {"n": key}, client.headers(key, extra),
                                 timeout=timeout)


@pytest.fixture(scope="module")
def three(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,sleep", KEYGATE_SHARDS=3).start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def one(origin):
    """Every key of a tenant in one object, answers kept 2 s (4xx too)."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,reject,sleep", KEYGATE_SHARDS=1,
               IDEMPOTENCY_TTL_SECONDS=2, IDEMPOTENCY_TTL_4XX_SECONDS=2).start()
    yield s
    s.cleanup()


def test_a_tenants_keys_live_in_n_objects_and_each_key_runs_once(three, origin):
    before = objects(three)
    a = Client(three, unique("shard-a"))
    runs = origin.count("/echo")
    keys = [f"k-{i}" for i in range(30)]
    first = {k: call(a, "echo", k) for k in keys}
    assert all(r.status == 200 and r.header("idempotent-replayed") is None for r in first.values())
    assert origin.count("/echo") == runs + 30
    for k in keys:
        again = call(a, "echo", k)
        assert again.header("idempotent-replayed") == "true" and again.body == first[k].body
        assert_problem(call(a, "echo", k, {"n": "other"}), 422, "idempotency-key-reused")
    assert origin.count("/echo") == runs + 30
    tenant_a = set(objects(three)) - set(before)
    assert 1 <= len(tenant_a) <= 3, tenant_a
    # Another tenant's keys, the same key strings, never land in tenant a's objects.
    b = Client(three, unique("shard-b"))
    for k in keys[:10]:
        r = call(b, "echo", k)
        assert r.status == 200 and r.header("idempotent-replayed") is None
    tenant_b = set(objects(three)) - set(before) - tenant_a
    assert 1 <= len(tenant_b) <= 3, tenant_b


def test_a_key_in_flight_does_not_hold_up_the_other_keys_of_its_object(one, origin):
    c = Client(one, unique("busy"))
    sleeps = origin.count("/sleep")
    out = {}
    slow = threading.Thread(target=lambda: out.setdefault("r", call(c, "sleep", "k-slow", {"seconds": 3})))
    slow.start()
    time.sleep(0.8)
    t0 = time.time()
    for i in range(5):
        assert call(c, "echo", f"k-quick-{i}").status == 200
    assert time.time() - t0 < 2.5  # not behind the 3 s run
    # The busy key itself is in flight; a waiter on it gets its one answer.
    assert_problem(call(c, "sleep", "k-slow", {"seconds": 3}), 409, "idempotency-key-in-flight")
    waited = call(c, "sleep", "k-slow", {"seconds": 3}, {"prefer": "wait=10"})
    slow.join()
    assert out["r"].status == 200 and waited.status == 200
    assert waited.body == out["r"].body and waited.header("idempotent-replayed") == "true"
    assert origin.count("/sleep") == sleeps + 1


def test_keys_in_one_object_expire_apart_and_the_emptied_object_drops_its_database(one, origin):
    c = Client(one, unique("apart"))
    before = objects(one)
    assert call(c, "echo", "k-early").status == 200
    (stem,) = set(objects(one)) - set(before)
    time.sleep(1.2)
    assert call(c, "echo", "k-late").status == 200
    # At 2.4 s the first answer has expired (2 s), the second has not.
    time.sleep(1.2)
    runs = origin.count("/echo")
    early = call(c, "echo", "k-early")
    assert early.status == 200 and early.header("idempotent-replayed") is None
    late = call(c, "echo", "k-late")
    assert late.header("idempotent-replayed") == "true"
    assert origin.count("/echo") == runs + 1
    # Once every key's answer expired, the object's alarm clears them and the
    # object drops its database.
    deadline = time.time() + 15
    while objects(one).get(stem, 0) > EMPTY and time.time() < deadline:
        time.sleep(0.5)
    assert objects(one).get(stem, 0) <= EMPTY


def test_a_crash_takes_over_only_the_lease_it_killed_and_keeps_the_other_answers(origin):
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,sleep", KEYGATE_SHARDS=1,
               IDEMPOTENCY_LEASE_SECONDS=30).start()
    try:
        c = Client(s, unique("crash"))
        done = {k: call(c, "echo", k) for k in ("k-a", "k-b")}
        assert all(r.status == 200 for r in done.values())
        held = {"seconds": 4}
        holder = threading.Thread(target=lambda: pytest.raises(Exception, call, c, "sleep", "k-held", held, None, 60))
        holder.start()
        time.sleep(1.5)
        s.crash()
        holder.join()
        s.start()  # same state directory
        echo_runs, sleep_runs = origin.count("/echo"), origin.count("/sleep")
        # The answers in the same object survive and replay; the dead holder's
        # key is taken over at once (its 30 s lease is not waited out).
        for k, r in done.items():
            again = call(c, "echo", k)
            assert again.header("idempotent-replayed") == "true" and again.body == r.body
        t0 = time.time()
        retry = call(c, "sleep", "k-held", held)
        assert retry.status == 200 and retry.header("idempotent-replayed") is None
        assert time.time() - t0 < 15
        assert call(c, "sleep", "k-held", held).header("idempotent-replayed") == "true"
        assert (origin.count("/echo"), origin.count("/sleep")) == (echo_runs, sleep_runs + 1)
    finally:
        s.cleanup()
