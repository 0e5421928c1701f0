"""Records of answers without rows of their own (origin functions) reach D1 in
batches through the record mirrors: few D1 statements per first execution, and
none lost when the server is killed between the answers and D1. Both gate
layouts: sharded objects hand their records over in batches from their alarm,
an object per key hands over its one record right after the answer."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Client, Server, scope_of, unique

ROUTE = "POST /functions/v1/echo"


@pytest.fixture(params=["8", "0"], ids=["sharded", "per-key"])
def fronting(request, origin):
    """A server fronting the origin, with its gate objects sharded or one per key."""
    return lambda: Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo", KEYGATE_SHARDS=request.param)


def call(c, key):
    return c.server.request("POST", "/functions/v1/echo", {"k": key}, c.headers(key))


def mirrors(server):
    r = server.request("GET", "/__test/mirrors")
    assert r.status == 200, r
    return r.json()


def records(server, c):
    return server.d1_value(
        f"SELECT count(*) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}' AND route = '{ROUTE}'")


def wait_for_records(server, c, n, seconds):
    deadline = time.time() + seconds
    while (got := records(server, c)) != n and time.time() < deadline:
        time.sleep(1)
    return got


def test_a_thousand_origin_first_executions_cost_at_most_twenty_d1_statements(fronting):
    s = fronting().start()
    try:
        c = Client(s, unique("batch"))
        before = mirrors(s)["statements"]
        keys = [f"k-{i}" for i in range(1000)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            replies = list(pool.map(lambda k: call(c, k), keys))
        assert {r.status for r in replies} == {200}
        assert all(r.header("idempotent-replayed") is None for r in replies)
        deadline = time.time() + 30
        while (m := mirrors(s))["waiting"] and time.time() < deadline:
            time.sleep(0.5)
        assert m["waiting"] == 0, m
        statements = m["statements"] - before
        print(f"\nD1 statements for 1000 origin first executions: {statements}")
        assert 0 < statements <= 20, statements
        # Every record is there, each once, and replays from D1 answer the same.
        assert records(s, c) == 1000
        assert s.d1_value(f"SELECT count(DISTINCT key) FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'") == 1000
    finally:
        s.cleanup()


def test_every_answered_record_reaches_d1_after_a_kill_between_answers_and_mirrors(fronting):
    s = fronting().start()
    try:
        c = Client(s, unique("kill"))
        answered, stop = [], threading.Event()

        def worker(w):
            i = 0
            while not stop.is_set():
                key = f"k-{w}-{i}"
                i += 1
                try:
                    r = call(c, key)
                except OSError:
                    return  # the server is gone
                if r.status == 200:
                    answered.append(key)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        time.sleep(4)
        s.crash()  # SIGKILL wrangler and workerd while answers and hand-overs are on their way
        stop.set()
        for t in threads:
            t.join()
        assert len(answered) > 50, len(answered)
        in_d1_at_kill = records(s, c)
        print(f"\n{len(answered)} answered, {in_d1_at_kill} in D1 when killed")
        s.start()  # same state directory
        # The mirrors' alarms flush what they hold; a key object whose hand-over
        # did not land sends it again from its retry alarm (30 s).
        got = wait_for_records(s, c, len(answered), 90)
        assert got >= len(answered), (got, len(answered))
        rows = s.d1(f"SELECT key FROM idempotency_records WHERE scope = '{scope_of(c.tenant, c.sub)}'")
        assert set(answered) <= {r["key"] for r in rows}
        # The records answer once the objects have forgotten their slots: a replay.
        r = call(c, answered[0])
        assert r.status == 200 and r.header("idempotent-replayed") == "true"
    finally:
        s.cleanup()


def test_a_key_released_while_its_record_waits_in_the_mirror_stays_released(fronting):
    s = fronting().start()
    try:
        c = Client(s, unique("rel"))
        # Released at once after the answer: the record is at most in its mirror.
        for i in range(20):
            key = f"k-{i}"
            assert call(c, key).status == 200
            assert c.delete(f"/v1/idempotency/keys/{key}?route=/functions/v1/echo").status == 204
        deadline = time.time() + 10
        while mirrors(s)["waiting"] and time.time() < deadline:
            time.sleep(0.3)
        time.sleep(0.5)
        assert records(s, c) == 0
        again = call(c, "k-0")
        assert again.status == 200 and again.header("idempotent-replayed") is None
    finally:
        s.cleanup()
