"""The fencing token: every execution of a key that reaches an origin function
carries `Idempotency-Fence: <n>` beside the derived `Idempotency-Key`, and for
one key every new execution's number is greater than every earlier one's —
after an origin 5xx and its retry, after a release and a re-run, after a
SIGKILL mid-execution and the takeover by a retry, across restarts, and after
the key's answer expired and its object was emptied. A replay reaches no origin,
and a keyless passthrough carries no fence.

The origin (tests/e2e/origin.py, `/scripted`) logs every call with the headers
it received and answers 5xx or stalls as each test scripts it for the key."""

import http.client
import re
import threading
import time

import pytest

from conftest import Client, Server, forwarded_key, scope_of, unique
from origin import Stall
from test_storage_cleanup import EMPTY, eventually_empty, new_object, objects

SHORT_TTL = 2  # seconds: the answer TTL of /functions/v1/scripted-short


@pytest.fixture(scope="module")
def srv(origin):
    """Fronts `/scripted` with the default TTL and `/scripted-short` with a 2 s one;
    keyless calls pass straight through."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="scripted,scripted-short",
               UPSTREAM_KEY_POLICY="optional", UPSTREAM_TIMEOUT_MS=10000,
               IDEMPOTENCY_ROUTE_TTLS=f"/functions/v1/scripted-short={SHORT_TTL}").start()
    yield s
    s.cleanup()


def fence_of(call):
    """The call's fence as a number: the header must be there, a decimal integer
    without sign or leading zeros, from 1 to 2^53."""
    assert call.fence is not None, f"no Idempotency-Fence header on origin call {call.line()}"
    assert re.fullmatch(r"[1-9][0-9]*", call.fence), f"Idempotency-Fence is not a positive decimal: {call.line()}"
    n = int(call.fence)
    assert n <= 2**53, f"Idempotency-Fence above 2^53: {call.line()}"
    return n


def assert_fences_grow(calls):
    """Every call carries a fence, each greater than all before it (arrival order)."""
    fences = [fence_of(c) for c in calls]
    assert all(a < b for a, b in zip(fences, fences[1:])), [c.line() for c in calls]
    return fences


def derived(client, name, key):
    return forwarded_key(scope_of(client.tenant, client.sub), f"POST /functions/v1/{name}", key)


def call(client, name, body, key=None, extra=None, timeout=60):
    return client.server.request("POST", f"/functions/v1/{name}", body, client.headers(key, extra), timeout=timeout)


def answered_by(reply, origin_call):
    """The client's reply is the origin's answer of that very call."""
    assert reply.status == origin_call.status, (reply, origin_call.line())
    assert reply.body == origin_call.answer, (reply, origin_call.line())


def test_a_retry_after_an_origin_503_runs_with_a_greater_fence(srv, origin):
    c = Client(srv, unique("fence"))
    dk = derived(c, "scripted", "k-503")
    origin.script(dk, 503)
    first = call(c, "scripted", {"n": 1}, "k-503")
    assert first.status == 503, first
    second = call(c, "scripted", {"n": 1}, "k-503")
    assert second.status == 200 and second.header("idempotent-replayed") is None, second
    calls = origin.calls_for(dk)
    assert [x.status for x in calls] == [503, 200], [x.line() for x in calls]
    answered_by(first, calls[0])
    answered_by(second, calls[1])
    assert_fences_grow(calls)


def test_a_rerun_after_a_release_runs_with_a_greater_fence(srv, origin):
    c = Client(srv, unique("fence"))
    dk = derived(c, "scripted", "k-release")
    first = call(c, "scripted", {"n": 2}, "k-release")
    assert first.status == 200, first
    assert c.delete("/v1/idempotency/keys/k-release?route=/functions/v1/scripted").status == 204
    again = call(c, "scripted", {"n": 2}, "k-release")
    assert again.status == 200 and again.header("idempotent-replayed") is None, again
    calls = origin.calls_for(dk)
    assert len(calls) == 2, [x.line() for x in calls]
    answered_by(again, calls[1])
    assert_fences_grow(calls)


def test_every_execution_carries_a_fence_the_derived_key_never_changes_and_replays_reach_no_origin(srv, origin):
    c = Client(srv, unique("fence"))
    dk = derived(c, "scripted", "k-every")
    origin.script(dk, 503, 502, 500)
    marker = unique("every")
    replies = [call(c, "scripted", {"marker": marker}, "k-every") for _ in range(6)]
    assert [r.status for r in replies] == [503, 502, 500, 200, 200, 200], replies
    assert [r.header("idempotent-replayed") for r in replies[3:]] == [None, "true", "true"], replies
    assert replies[4].body == replies[5].body == replies[3].body
    # The calls found by their body: four executions (three 5xx, one 200), none
    # for the two replays, each with the same derived key and path.
    calls = [x for x in origin.log if marker.encode() in x.body]
    assert len(calls) == 4, [x.line() for x in calls]
    assert [(x.key, x.path) for x in calls] == [(dk, "/scripted")] * 4, [x.line() for x in calls]
    for reply, x in zip(replies, calls):
        answered_by(reply, x)
    assert_fences_grow(calls)
    # No other origin call carries this client's key in any form.
    assert [x for x in origin.log if x.key == "k-every"] == []


def test_a_keyless_passthrough_carries_no_fence(srv, origin):
    c = Client(srv, unique("fence"))
    marker = unique("keyless")
    replies = [call(c, "scripted", {"marker": marker}) for _ in range(2)]
    assert [r.status for r in replies] == [200, 200], replies
    assert all(r.header("idempotent-replayed") is None for r in replies), replies
    calls = [x for x in origin.log if marker.encode() in x.body]
    assert len(calls) == 2, [x.line() for x in calls]
    assert [(x.key, x.fence) for x in calls] == [(None, None), (None, None)], [x.line() for x in calls]


def test_a_rerun_after_the_answer_expired_and_its_object_was_emptied_has_a_greater_fence(srv, origin):
    # A new tenant: its key is the only one in its gate object, so the object is
    # emptied (its database dropped) once the answer expires.
    c = Client(srv, unique("fence"), unique("fence-tenant"))
    dk = derived(c, "scripted-short", "k-expire")
    before = objects(srv)
    first = call(c, "scripted-short", {"n": 4}, "k-expire")
    assert first.status == 200, first
    stem, size = new_object(srv, before)
    assert size > EMPTY, size
    # The object's alarm at the expiry clears the slot and drops the database.
    time.sleep(SHORT_TTL)
    assert eventually_empty(srv, stem, within=20) <= EMPTY
    again = call(c, "scripted-short", {"n": 4}, "k-expire")
    assert again.status == 200 and again.header("idempotent-replayed") is None, again
    calls = origin.calls_for(dk)
    assert len(calls) == 2, [x.line() for x in calls]
    answered_by(again, calls[1])
    assert_fences_grow(calls)


def send(srv, client, key, body, timeout):
    try:
        return call(client, "scripted", body, key, {"prefer": "wait=10"}, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None


def retry_until_answered(srv, client, key, body, seconds=90):
    """Retries like a client: on no answer (the server is down), 409 or 503."""
    deadline = time.time() + seconds
    while True:
        r = send(srv, client, key, body, timeout=30)
        if r is not None and r.status not in (409, 503):
            return r
        assert time.time() < deadline, r
        time.sleep(0.5)


def test_a_takeover_after_a_kill_mid_execution_runs_with_a_greater_fence(origin, tmp_path):
    srv = Server(state_dir=str(tmp_path), UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="scripted",
                 IDEMPOTENCY_LEASE_SECONDS=2, UPSTREAM_TIMEOUT_MS=120000)
    try:
        srv.start()
        c = Client(srv, unique("fence"))
        dk = derived(c, "scripted", "k-kill")
        origin.script(dk, Stall(100))
        body = {"n": 5}
        lost = []
        t = threading.Thread(target=lambda: lost.append(send(srv, c, "k-kill", body, timeout=110)))
        t.start()
        deadline = time.time() + 30
        while not origin.calls_for(dk):
            assert time.time() < deadline, "the first call never reached the origin"
            time.sleep(0.1)
        srv.crash()
        t.join(30)
        assert lost == [None], lost     # the client got no answer: the server died
        # The origin saw its caller hang up, and never answered.
        deadline = time.time() + 10
        while origin.calls_for(dk)[0].finished is None:
            assert time.time() < deadline, origin.calls_for(dk)[0].line()
            time.sleep(0.1)
        assert origin.calls_for(dk)[0].status is None, origin.calls_for(dk)[0].line()
        srv.start()
        again = retry_until_answered(srv, c, "k-kill", body)
        assert again.status == 200 and again.header("idempotent-replayed") is None, again
        calls = origin.calls_for(dk)
        assert len(calls) == 2, [x.line() for x in calls]
        answered_by(again, calls[1])
        assert_fences_grow(calls)
    finally:
        srv.stop()


def test_fences_keep_growing_across_restarts(origin, tmp_path):
    """Run, restart (SIGTERM), release, run again, restart (SIGKILL), release, run
    again: three executions of one key with growing fences."""
    srv = Server(state_dir=str(tmp_path), UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="scripted")
    try:
        srv.start()
        c = Client(srv, unique("fence"))
        dk = derived(c, "scripted", "k-restart")
        body = {"n": 6}
        replies = [call(c, "scripted", body, "k-restart")]
        for stop in (srv.stop, srv.crash):
            stop()
            srv.start()
            # The restarted server still has the answer: a replay, no origin call.
            replay = call(c, "scripted", body, "k-restart")
            assert replay.header("idempotent-replayed") == "true" and replay.body == replies[-1].body, replay
            assert c.delete("/v1/idempotency/keys/k-restart?route=/functions/v1/scripted").status == 204
            replies.append(call(c, "scripted", body, "k-restart"))
        assert [r.status for r in replies] == [200, 200, 200], replies
        assert all(r.header("idempotent-replayed") is None for r in replies), replies
        calls = origin.calls_for(dk)
        assert len(calls) == 3, [x.line() for x in calls]
        for reply, x in zip(replies, calls):
            answered_by(reply, x)
        assert_fences_grow(calls)
    finally:
        srv.stop()
