"""Where one kind of idemgate request spends its CPU: a V8 profile of `wrangler dev`.

Started by `./x profile KIND [REQUESTS]` (which builds the Worker without
wasm-opt, so the profile names Rust functions). Starts the bench's origin and
`./x dev` with workerd's inspector on a free port (fresh state, request log off,
UPSTREAM_KEY_POLICY=optional), sends 200 warm-up requests of KIND, then samples
the Worker's isolate (the Durable Objects run in it too, locally) with the
inspector's `Profiler` while REQUESTS more (default 1500) go one after another.

KIND: healthz, passthrough (an origin function without a key), new (a new key
each time), replay (one key again and again).

Prints the p50, then the functions with the most samples: by self time, and
inclusive (a function and what it calls). `PROFILE_OUT=file.cpuprofile` also
writes the raw profile, which Chrome DevTools' Performance panel opens. Local
workerd runs everything on one thread, so the shares are of that thread's time.
"""

import collections
import json
import os
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path

import websocket  # websocket-client, from tests/requirements.txt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("healthz", "passthrough", "new", "replay")
# wasm-bindgen's generated wrappers around every import: noise in a listing.
WRAPPERS = ("externref shim", "catch wrapper", "multivalue shim")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: ./x profile {{{','.join(KINDS)}}} [REQUESTS]")
    kind = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    tmp = Path(tempfile.mkdtemp(prefix="idemgate-profile-"))
    try:
        profile = run(kind, requests, tmp)
    finally:
        bench.stop_all()
    report(profile)


def run(kind, requests, tmp):
    origin_port, port, inspector = bench.free_port(), bench.free_port(), bench.free_port()
    bench.start(["node", str(ROOT / "bench" / "origin.mjs")], {"PORT": str(origin_port), "ORIGIN_DELAY_MS": "0"})
    bench.wait_ready(origin_port, "/count")
    bench.start([str(ROOT / "x"), "dev", "--log-level", "warn", "--inspector-port", str(inspector)], {
        "PORT": str(port), "IDEMGATE_STATE_DIR": str(tmp / "state"), "IDEMGATE_SKIP_BUILD": "1", "CI": "1",
        "AUTH_JWT_SECRET": bench.SECRET, "UPSTREAM_BASE_URL": f"http://127.0.0.1:{origin_port}",
        "UPSTREAM_FUNCTIONS": "echo", "UPSTREAM_KEY_POLICY": "optional", "REQUEST_LOG": "off"},
        log=open(tmp / "dev.log", "w"))
    bench.wait_ready(port)
    token = bench.make_token(bench.SECRET, "profile", "profile", ttl=3600)
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"order": 42, "amount": "19.99"}).encode()
    if kind == "healthz":
        cell = bench.Cell(kind, port, "GET", "/healthz")
    else:
        key = {"new": "new", "replay": f"replay-{uuid.uuid4().hex[:8]}", "passthrough": None}[kind]
        cell = bench.Cell(kind, port, "POST", "/functions/v1/echo", body, auth, key)
    for _ in range(200):
        cell.one()
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{inspector}/json", timeout=10).read())
    ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=300)
    calls = [0]

    def send(method, params=None):
        calls[0] += 1
        ws.send(json.dumps({"id": calls[0], "method": method, "params": params or {}}))
        while True:
            message = json.loads(ws.recv())
            if message.get("id") == calls[0]:
                return message

    send("Profiler.enable")
    send("Profiler.setSamplingInterval", {"interval": 50})
    send("Profiler.start")
    cell.samples.clear()
    cell.statuses.clear()
    for _ in range(requests):
        cell.one()
    profile = send("Profiler.stop")["result"]["profile"]
    ws.close()
    print(f"{kind}: {requests} requests, p50 {cell.p50():.2f} ms (profiled), statuses {cell.statuses}")
    if os.environ.get("PROFILE_OUT"):
        Path(os.environ["PROFILE_OUT"]).write_text(json.dumps(profile))
        print(f"raw profile: {os.environ['PROFILE_OUT']}")
    return profile


def report(profile, top=30):
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent = {c: n["id"] for n in profile["nodes"] for c in n.get("children", [])}

    def name(node):
        frame = node["callFrame"]
        return frame["functionName"] or "(anonymous)"

    self_samples, inclusive = collections.Counter(), collections.Counter()
    total = 0
    for node in profile["nodes"]:
        hits = node.get("hitCount", 0)
        if not hits:
            continue
        total += hits
        self_samples[name(node)] += hits
        seen, current = set(), node["id"]
        while current is not None:
            n = name(nodes[current])
            if n not in seen:
                inclusive[n] += hits
                seen.add(n)
            current = parent.get(current)
    shown = lambda counter: [(n, c) for n, c in counter.most_common() if not n.endswith(WRAPPERS)][:top]  # noqa: E731
    print(f"{total} samples")
    for title, counter in (("self", self_samples), ("inclusive", inclusive)):
        print(f"\n{title}:")
        for n, c in shown(counter):
            print(f"{c * 100 / total:5.1f}%  {n[:150]}")


if __name__ == "__main__":
    main()
