"""Nothing is left behind per key: a gate Durable Object drops its SQLite database
(`deleteAll`) once its keys hold nothing — an answer expired, it was released, its
execution failed, or it was only asked about. With one object per key that is the
key's own object; with sharded objects, the tenant's object once its last key goes. Cloudflare keeps an object's database
until then, so without this every key ever seen would cost storage for good.

Local workerd keeps one SQLite file (plus -wal and -shm) per object under the state
directory; after `deleteAll` only an empty 4 KiB database file remains.

The database also holds the last fence the object issued: it is dropped only once
the object's clock is a second past that fence (`gate::may_vacate_at`), so an object
emptied right after an execution (a release, a failure) drops it on its alarm then."""

import time
from pathlib import Path

import pytest

from conftest import Client, Server, unique

EMPTY = 4096  # bytes of an emptied object's files in local workerd
# How long an emptied object keeps its last fence (gate::FENCE_HOLD_MS), and the
# alarm's slack after it.
FENCE_HOLD_S = 1.0
ALARM_SLACK_S = 2.0


@pytest.fixture(scope="module", params=["0", "8"], ids=["per-key", "sharded"])
def short_ttl(request, origin):
    """Gate objects one per key, or sharded (each test's tenant is new, so its
    first key creates the tenant's object there too)."""
    s = Server(UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="echo,flaky", IDEMPOTENCY_TTL_SECONDS=2,
               KEYGATE_SHARDS=request.param).start()
    yield s
    s.cleanup()


def objects(server):
    """Bytes on disk per key object (its .sqlite, -wal and -shm files). Only
    `KeyGate` objects (local workerd keeps each class under `<script>-<class>/`):
    the record mirrors are a fixed few, long-lived by design."""
    out = {}
    for p in (Path(server.state_dir) / "v3" / "do").rglob("*.sqlite*"):
        if p.name.startswith("metadata.") or not p.parent.name.endswith("-KeyGate"):
            continue
        stem = p.name.split(".sqlite")[0]
        out[stem] = out.get(stem, 0) + p.stat().st_size
    return out


def new_object(server, before):
    """The one object created since `before`, and its bytes."""
    after = objects(server)
    new = [k for k in after if k not in before]
    assert len(new) == 1, (before, after)
    return new[0], after[new[0]]


def eventually_empty(server, stem, within=15):
    deadline = time.time() + within
    while time.time() < deadline:
        size = objects(server).get(stem, 0)
        if size <= EMPTY:
            return size
        time.sleep(0.5)
    return objects(server).get(stem, 0)


def call(client, name, key):
    return client.server.request("POST", f"/functions/v1/{name}", {"n": unique("n")}, client.headers(key))


def test_an_expired_answer_leaves_only_an_empty_database(short_ttl, origin):
    c = Client(short_ttl, unique("ttl"))
    before = objects(short_ttl)
    assert call(c, "echo", "k-expire").status == 200
    stem, size = new_object(short_ttl, before)
    assert size > 4 * EMPTY, size  # the answer and the lease are on disk
    # The alarm at the answer's expiry (2 s) clears the slot and drops the database.
    assert eventually_empty(short_ttl, stem) <= EMPTY
    # Expired means new: the same key runs again, in the same object.
    runs = origin.count("/echo")
    assert call(c, "echo", "k-expire").status == 200
    assert origin.count("/echo") == runs + 1


def test_a_released_key_leaves_only_an_empty_database(short_ttl):
    c = Client(short_ttl, unique("rel"))
    before = objects(short_ttl)
    assert call(c, "echo", "k-release").status == 200
    stem, size = new_object(short_ttl, before)
    assert size > 4 * EMPTY, size
    released = time.time()
    assert c.delete("/v1/idempotency/keys/k-release?route=/functions/v1/echo").status == 204
    assert eventually_empty(short_ttl, stem, within=FENCE_HOLD_S + ALARM_SLACK_S) <= EMPTY
    assert time.time() - released < FENCE_HOLD_S + ALARM_SLACK_S


def test_a_failed_execution_leaves_only_an_empty_database(short_ttl, origin):
    c = Client(short_ttl, unique("fail"))
    before = objects(short_ttl)
    assert call(c, "flaky", "k-fail").status == 500  # the origin's first answer per key
    stem, _ = new_object(short_ttl, before)
    assert eventually_empty(short_ttl, stem, within=FENCE_HOLD_S + ALARM_SLACK_S) <= EMPTY


def test_asking_about_an_unknown_key_leaves_only_an_empty_database(short_ttl):
    c = Client(short_ttl, unique("ask"))
    before = objects(short_ttl)
    reply = c.get(f"/v1/idempotency/keys/{unique('never')}?route=/functions/v1/echo")
    assert reply.status == 404
    stem, size = new_object(short_ttl, before)
    assert size <= EMPTY, size
