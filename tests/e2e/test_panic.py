"""A Rust panic inside a handler. Stable Rust builds the Worker with
panic=abort, so the panic kills the wasm instance. The request answers 500
problem+json, the key is released at once (not after the lease), and the isolate
and the object keep serving.

Two topologies: `wrangler dev` runs the Worker and its objects in one isolate
("shared"); production may run the object in another isolate than the Worker,
which "split" reproduces with the object in a second worker (`script_name`).
Own servers: a panic kills every request in flight in the isolate, and the lease
here (20 s) is far longer than each test."""

import os
import re
import subprocess
import time

import pytest

from conftest import ROOT, SECRET, Client, Server, assert_problem, free_port, logged_requests, text_doc, unique

PANIC = {"x-idemgate-test-fail": "panic"}
WRANGLER = str(ROOT / "node_modules/.bin/wrangler")
VARS = {"AUTH_JWT_SECRET": SECRET, "IDEMGATE_TEST_HOOKS": "1", "IDEMPOTENCY_LEASE_SECONDS": "20"}


def split_config(name, objects):
    vars_toml = "\n".join(f'{k} = "{v}"' for k, v in VARS.items())
    return f'''name = "{name}"
main = "{ROOT}/src/entry.js"
compatibility_date = "2026-04-01"
{objects}
[[d1_databases]]
binding = "DB"
database_name = "idemgate"
database_id = "00000000-0000-4000-8000-000000000000"
migrations_dir = "{ROOT}/migrations"

[vars]
{vars_toml}
'''


class SplitServer(Server):
    """The Worker and the KeyGate objects in two workers, so in two isolates."""

    def start(self, timeout=90):
        self.port = free_port()
        front = os.path.join(self.state_dir, "front.toml")
        gate = os.path.join(self.state_dir, "gate.toml")
        with open(front, "w") as f:
            f.write(split_config("idemgate", '[[durable_objects.bindings]]\nname = "KEY_GATE"\n'
                                 'class_name = "KeyGate"\nscript_name = "idemgate-gate"\n'))
        with open(gate, "w") as f:
            f.write(split_config("idemgate-gate", '[[durable_objects.bindings]]\nname = "KEY_GATE"\n'
                                 'class_name = "KeyGate"\n\n[[migrations]]\ntag = "v1"\n'
                                 'new_sqlite_classes = ["KeyGate"]\n'))
        # A dev registry of its own: another test process's `idemgate` never answers for this one's.
        env = {**os.environ, "CI": "1", "WRANGLER_REGISTRY_PATH": os.path.join(self.state_dir, "registry")}
        subprocess.run([WRANGLER, "d1", "migrations", "apply", "idemgate", "--local", "--persist-to",
                        self.state_dir, "-c", gate], cwd=self.state_dir, env=env, check=True, capture_output=True)
        self.log_path = os.path.join(self.state_dir, f"dev-{self.port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [WRANGLER, "dev", "-c", front, "-c", gate, "--ip", "127.0.0.1", "--port", str(self.port),
             "--persist-to", self.state_dir, "--show-interactive-dev-session=false",
             "--inspector-port", str(free_port())],
            cwd=self.state_dir, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dev server exited: {open(self.log_path).read()[-3000:]}")
            try:
                if self.request("GET", "/healthz", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"dev server did not become ready: {open(self.log_path).read()[-3000:]}")


@pytest.fixture(scope="module", params=["shared", "split"])
def srv(request):
    s = (Server(IDEMPOTENCY_LEASE_SECONDS=20) if request.param == "shared" else SplitServer()).start()
    yield s
    s.cleanup()


# 0: the panic comes in the same turn as the lease write; 300: after an await,
# so the lease is durable in the object's SQLite when the instance dies.
@pytest.mark.parametrize("delay_ms", ["0", "300"])
def test_a_panic_answers_500_releases_the_key_and_keeps_serving(srv, delay_ms):
    c = Client(srv, unique("panic"))
    doc = text_doc()
    started = time.time()
    r = c.post_document(doc, "k-panic", {**PANIC, "x-idemgate-test-delay-ms": delay_ms}, timeout=15)
    assert_problem(r, 500, "internal")
    assert r.header("idempotent-replayed") is None

    # The isolate serves at once.
    assert srv.request("GET", "/healthz").status == 200
    # The key is free: the retry runs (no 409 while the dead holder's lease lasts).
    again = c.post_document(doc, "k-panic", timeout=15)
    assert again.status == 201, again
    assert again.header("idempotent-replayed") is None
    assert time.time() - started < 10
    state = c.get("/v1/idempotency/keys/k-panic?route=/v1/documents")
    assert state.status == 200 and state.json()["state"] == "completed", state
    # The object keeps answering for its key: the answer is replayed.
    replay = c.post_document(doc, "k-panic")
    assert replay.status == 201 and replay.header("idempotent-replayed") == "true"
    assert replay.json()["id"] == again.json()["id"]
    # Other keys work.
    assert c.post_document(text_doc(), "k-other").status == 201
    # The panicking request wrote nothing: one document per successful key.
    assert srv.d1_value(f"SELECT count(*) FROM documents WHERE tenant = '{c.tenant}'") == 2


def test_a_panicking_request_still_logs_its_line(srv):
    c = Client(srv, unique("panic"))
    r = c.post_document(text_doc(), unique("k-panic-log"), PANIC, timeout=15)
    assert_problem(r, 500, "internal")
    rid = r.header("x-request-id")
    assert rid, r.headers
    mine = [l for l in logged_requests(srv, {rid}) if l.get("request_id") == rid]
    assert len(mine) == 1, mine
    assert (mine[0]["outcome"], mine[0]["status"], mine[0]["route"]) == ("error", 500, "POST /v1/documents"), mine
    # With the object in the Worker's isolate the dead instance cannot print it:
    # JavaScript builds it, with the fields, order and formats of every other
    # line (request_log); split, the Worker lives and prints its own.
    line = mine[0]
    base = ["event", "time", "request_id", "method", "route", "outcome", "status", "total_ms"]
    assert [k for k in line if k in base] == base, line
    assert (line["event"], line["method"]) == ("request", "POST"), line
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", line["time"]), line
    assert isinstance(line["total_ms"], (int, float)) and 0 <= line["total_ms"] < 15_000, line
