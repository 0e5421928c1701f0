"""End-to-end harness: a real `wrangler dev` (workerd, local D1, SQLite-backed
Durable Objects) started through the README's dev command (`./x dev`) on a fresh
state directory and a free port, stopped by process id afterwards."""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jwt import token as make_token
from origin import Origin

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-test-secret"
# wrangler dev's proxy answer when its connection to the Worker drops (see Server.request).
PROXY_DROP = b"Your worker restarted mid-request"
PROXY_RETRIES = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lowercase name -> value (last wins)
        self.raw_headers = []
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:300]!r}>"


_D1_TEMPLATE = []


def d1_template():
    """A local D1 database with every migration applied — by the very command
    `./x dev` runs — made once per test process. Each new server's state starts
    as a copy of it, which saves every start a wrangler run of its own."""
    if not _D1_TEMPLATE:
        state = tempfile.mkdtemp(prefix="idemgate-d1-template-")
        out = subprocess.run([str(ROOT / "node_modules/.bin/wrangler"), "d1", "migrations", "apply", "idemgate",
                              "--local", "--persist-to", state], cwd=ROOT, env={**os.environ, "CI": "1"},
                             capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"migrating the D1 template failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        _D1_TEMPLATE.append(Path(state) / "v3" / "d1")
    return _D1_TEMPLATE[0]


class Server:
    """One `./x dev` process group on its own port and state directory (its
    D1 database seeded, migrated, from [`d1_template`] when it has none)."""

    def __init__(self, state_dir=None, **vars):
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="idemgate-e2e-")
        self.owns_state = state_dir is None
        self.vars = {
            "AUTH_JWT_SECRET": SECRET,
            "IDEMGATE_TEST_HOOKS": "1",
            **{k: str(v) for k, v in vars.items()},
        }
        self.proc = None
        self.port = None

    def start(self, timeout=90, ready_status=200):
        """Starts the dev server; ready once /healthz answers `ready_status`
        (500 for a Worker that refuses its configuration)."""
        self.port = free_port()
        d1 = Path(self.state_dir) / "v3" / "d1"
        if not d1.exists():
            shutil.copytree(d1_template(), d1)
        env = {**os.environ, **self.vars, "PORT": str(self.port), "IDEMGATE_STATE_DIR": self.state_dir,
               "IDEMGATE_SKIP_BUILD": "1", "IDEMGATE_SKIP_MIGRATIONS": "1", "CI": "1"}
        self.log_path = Path(self.state_dir) / f"dev-{self.port}.log"
        self.log = open(self.log_path, "w")
        # A new session makes the dev command the leader of its own process group,
        # so stop() reaches wrangler and workerd through this one pid.
        # Its own inspector port: two servers starting at once never race for the default.
        args = [str(ROOT / "x"), "dev", "--inspector-port", str(free_port())]
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self.wait_ready(timeout, ready_status, "dev server")

    def wait_ready(self, timeout, ready_status, what):
        """Waits until /healthz answers `ready_status`; stops the server and
        raises with the tail of its log if it exits or the time runs out."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.request("GET", "/healthz", timeout=2).status == ready_status:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{what} did not become ready: {self.log_path.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        self.proc = None

    def crash(self):
        """SIGKILL the whole group: no graceful shutdown of wrangler or workerd."""
        self.stop(signal.SIGKILL)

    def cleanup(self):
        self.stop()
        if self.owns_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One HTTP request. wrangler dev's own proxy sometimes drops its connection
        to the Worker under load and answers a non-GET request with a plain-text 503
        "Your worker restarted mid-request" (workers-sdk#14641: the Worker did not
        restart). That answer never comes from idemgate, whose errors are
        problem+json; the test client does what a real client of an idempotency
        layer does with it: it retries the same request with the same key."""
        for _ in range(5):
            reply = self._request_once(method, path, body, headers, timeout)
            if not (reply.status == 503 and reply.body.startswith(PROXY_DROP)):
                return reply
            PROXY_RETRIES.append((method, path))
            time.sleep(0.2)
        return reply

    def _request_once(self, method, path, body, headers, timeout):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            reply = Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            reply.raw_headers = r.getheaders()
            return reply
        finally:
            conn.close()

    def d1(self, sql):
        """Runs SQL on the local D1 (read-only checks of what was committed).

        This reader is a second process on the server's SQLite file: while the
        server commits (a multi-megabyte record, a batch) the file is locked and
        the read is refused with SQLITE_BUSY. It then reads again, for at most
        20 s; any other failure fails the test at once."""
        deadline = time.time() + 20
        while True:
            out = subprocess.run(
                [str(ROOT / "node_modules/.bin/wrangler"), "d1", "execute", "idemgate", "--local",
                 "--persist-to", self.state_dir, "--json", "--command", sql],
                cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "CI": "1"})
            if out.returncode != 0 and "SQLITE_BUSY" in out.stderr and time.time() < deadline:
                time.sleep(0.2)
                continue
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)[0]["results"]

    def d1_value(self, sql):
        rows = self.d1(sql)
        return list(rows[0].values())[0]

    def d1_write(self, sql):
        """Changes the local D1 behind the Worker's back: only for tests of what the
        Worker does with stored data it cannot read (a bad migration, a hand edit).

        A second process on the server's SQLite file, like `d1`: refused with
        SQLITE_BUSY while the server commits (its counters' flush, a record
        batch), it writes again for at most 20 s (the write is all or nothing)."""
        deadline = time.time() + 20
        while True:
            out = subprocess.run(
                [str(ROOT / "node_modules/.bin/wrangler"), "d1", "execute", "idemgate", "--local",
                 "--persist-to", self.state_dir, "--command", sql],
                cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "CI": "1"})
            if out.returncode != 0 and "SQLITE_BUSY" in out.stderr and time.time() < deadline:
                time.sleep(0.2)
                continue
            assert out.returncode == 0, out.stderr
            return


class Client:
    """A caller with a token, talking to a server."""

    def __init__(self, server, sub, tenant=None, roles=()):
        self.server = server
        self.sub = sub
        self.tenant = tenant or sub
        self.token = make_token(SECRET, sub, tenant, roles)

    def headers(self, key=None, extra=None):
        h = {"authorization": f"Bearer {self.token}", "content-type": "application/json"}
        if key is not None:
            h["idempotency-key"] = key
        h.update(extra or {})
        return h

    def post_document(self, doc, key=None, extra=None, timeout=60):
        return self.server.request("POST", "/v1/documents", doc, self.headers(key, extra), timeout=timeout)

    def get(self, path, extra=None):
        return self.server.request("GET", path, None, self.headers(None, extra))

    def delete(self, path):
        return self.server.request("DELETE", path, None, self.headers())


def raw_post(srv, path, headers, chunks=None, body=None, timeout=30):
    """A POST sent as given: `chunks` chunked (no Content-Length), else `body`."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        if chunks is not None:
            conn.request("POST", path, body=iter(chunks), headers=headers, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def text_doc(content=None, filename="note.txt"):
    return {"filename": filename, "content_type": "text/plain",
            "content": content if content is not None else f"Document {uuid.uuid4()}. Some words here."}


def concurrently(n, fn):
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: fn(i), range(n)))


def assert_problem(reply, status, type_suffix=None):
    assert reply.status == status, reply
    assert reply.header("content-type").startswith("application/problem+json"), reply.headers
    p = reply.json()
    for field in ("type", "title", "status", "detail"):
        assert field in p, p
    assert p["status"] == status
    if type_suffix:
        assert p["type"] == "/errors/" + type_suffix, p["type"]
    return p


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def request_lines(text):
    """Every `{"event":"request",…}` object in a dev server's output, whatever
    wrangler puts around it: a prefix or suffix on the line (a timestamp, a log
    level, colours), or a line wrapped in the middle of the object."""
    text = ANSI.sub("", text)
    decoder = json.JSONDecoder()
    found = []
    for m in re.finditer(r'\{\s*"event"\s*:\s*"request"', text):
        start = m.start()
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            # Wrapped: join the following lines (dropping their line breaks) and try again.
            try:
                obj, _ = decoder.raw_decode(text[start:start + 4000].replace("\r", "").replace("\n", ""))
            except json.JSONDecodeError:
                continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def logged_requests(server, ids, timeout=15):
    """The request log lines in `server`'s output once every id in `ids` has one
    (or `timeout` passed): wrangler prints the Worker's output a little later."""
    deadline = time.time() + timeout
    while True:
        lines = request_lines(Path(server.log_path).read_text(errors="replace"))
        if set(ids) <= {l.get("request_id") for l in lines} or time.time() > deadline:
            return lines
        time.sleep(0.2)


def scope_of(tenant, sub=None):
    esc = lambda p: p.replace("%", "%25").replace(":", "%3A")
    return esc(tenant) if sub is None else f"{esc(tenant)}:{esc(sub)}"


def forwarded_key(scope, route, key):
    """What docs/contract.md ("Headers") says the origin receives: SHA-256 over the length-prefixed scope, route and key."""
    h = hashlib.sha256(b"idemgate forwarded key v1")
    for part in (scope, route, key):
        data = part.encode()
        h.update(struct.pack(">Q", len(data)))
        h.update(data)
    return h.hexdigest()


@pytest.fixture(scope="module")
def origin():
    """A counting origin function and trainer server on 127.0.0.1 (tests/e2e/origin.py)."""
    o = Origin().start()
    yield o
    o.stop()


@pytest.fixture(scope="session")
def server():
    """The shared server: default TTL, a 20 s lease, test hooks on."""
    s = Server(IDEMPOTENCY_LEASE_SECONDS=20).start()
    yield s
    s.cleanup()


@pytest.fixture
def alice(server):
    return Client(server, unique("alice"))


@pytest.fixture
def bob(server):
    return Client(server, unique("bob"))


# The files that wait longest (for alarms, refetch intervals, restarts), in
# the order they start on `./x test`'s pytest-xdist workers: first, so that the
# workers finish together rather than one running the longest file last.
LONGEST_FIRST = ["test_record_batching.py", "test_jwks.py", "test_openapi.py", "test_fault_campaign.py",
                 "test_lifecycle.py", "test_staging.py", "test_console.py", "test_coherence.py"]


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: each file's tests keep their order


# Requests retried by pytest-xdist's workers (`./x test` runs the files on
# several): each worker hands its count to the controller when it finishes.
WORKER_RETRIES = []


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["proxy_retries"] = len(PROXY_RETRIES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    WORKER_RETRIES.append(getattr(node, "workeroutput", {}).get("proxy_retries", 0))


def pytest_terminal_summary(terminalreporter):
    retried = len(PROXY_RETRIES) + sum(WORKER_RETRIES)
    if retried:
        terminalreporter.write_line(
            f"note: {retried} request(s) retried after wrangler dev's proxy dropped them (workers-sdk#14641)")
