"""idemgate benchmark: one run, everything measured side by side on 127.0.0.1.

Started by `./x bench` (which installs wrk, redis-server and the peer's npm
packages and builds the release Worker first). Starts, on free ports and a fresh
state directory: the origin function (bench/origin.mjs), `./x dev` (wrangler dev
fronting the origin with UPSTREAM_KEY_POLICY=optional), redis-server, and the peer
(bench/peer: express-idempotency with its Redis adapter). Runs bounded wrk loads,
a 500-request storm, prints one table with the derived ratios and targets, and
stops every process it started (by process group id)."""

import gzip
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"
DURATION = int(os.environ.get("BENCH_SECONDS", "5"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from jwt import token as make_token  # noqa: E402

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, env=None, cwd=ROOT, log=None):
    p = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=log or subprocess.DEVNULL,
                         stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
    return p


def stop_all():
    for p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def request(port, method, path, body=None, headers=None, timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def wait_ready(port, path="/healthz", method="GET", timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if request(port, method, path, timeout=2)[0] < 500:  # the service answers
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"port {port} not ready")


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url, connections, script=None, seconds=DURATION):
    threads = min(connections, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 60).stdout
    pct = {m.group(1): float(m.group(2)) * UNITS[m.group(3)]
           for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"p50": pct.get("50"), "p99": pct.get("99"), "rps": rps,
            "bad": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


def lua(path, headers, body_file=None, new_key=False, key=None):
    lines = ['wrk.method = "POST"']
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if body_file:
        lines.append(f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()')
    if key:
        lines.append(f'wrk.headers["Idempotency-Key"] = "{key}"')
    if new_key:
        lines += [
            f"local run = '{uuid.uuid4().hex[:10]}'",
            "local counter = 0",
            "function setup(thread) counter = counter + 1; thread:set('tid', counter) end",
            "function init(args) prefix = run .. '-' .. tostring(tid) .. '-'; n = 0 end",
            "function request() n = n + 1; wrk.headers['Idempotency-Key'] = prefix .. n; return wrk.format() end",
        ]
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


def storm(port, headers, body, n=500):
    key = f"storm-{uuid.uuid4().hex[:10]}"
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            results[i] = request(port, "POST", "/functions/v1/echo", body,
                                 {**headers, "idempotency-key": key, "prefer": "wait=10"}, timeout=60)
        except OSError as e:
            results[i] = (0, {}, str(e).encode())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    started = time.time()
    for t in threads:
        t.join()
    wall = time.time() - started
    ok = [r for r in results if r and r[0] == 200]
    return {"answers": len(ok), "identical": len({r[2] for r in ok}) == 1 and len(ok) == n, "wall_ms": wall * 1000}


def profile(port, headers, body, keyed, n=200):
    """Sequential requests on one connection; mean Server-Timing phases (ms)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    phases, totals = {}, []
    for _ in range(n):
        h = dict(headers)
        if keyed:
            h["Idempotency-Key"] = f"prof-{uuid.uuid4().hex}"
        t = time.perf_counter()
        conn.request("POST", "/functions/v1/echo", body=body, headers=h)
        r = conn.getresponse()
        r.read()
        totals.append((time.perf_counter() - t) * 1000)
        for name, value in r.getheaders():
            if name.lower() == "server-timing":
                for m in re.finditer(r"(\w+);dur=([\d.]+)", value):
                    phases.setdefault(m.group(1), []).append(float(m.group(2)))
    conn.close()
    totals.sort()
    out = {k: sum(v) / len(v) for k, v in phases.items()}
    out["client p50"] = totals[len(totals) // 2]
    return out


NOT_RUN = {"p50": None, "p99": None, "rps": None, "bad": 0}
FLOOR_HEALTHZ = "floor: GET /healthz of the JS Worker"
FLOOR_HOP_SAME = "floor: hop to an existing JS object, no storage"
FLOOR_HOP_NEW = "floor: hop to a new JS object per key, no storage"
FLOOR_PASS = "floor: origin via a JS Worker, no key"
FLOOR_NEW = "floor: JS per-key object, new key (lease, answer, D1 record)"


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def main():
    # BENCH_TMP=/dev/shm puts wrangler's state (the objects' SQLite files, D1) on
    # tmpfs, to separate the cost of disk syncs from the rest.
    tmp = Path(tempfile.mkdtemp(prefix="idemgate-bench-", dir=os.environ.get("BENCH_TMP")))
    try:
        return run(tmp)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    wasm = ROOT / "build" / "index_bg.wasm"
    raw = wasm.read_bytes()
    sizes = (len(raw), len(gzip.compress(raw, 9)))

    origin_port = free_port()
    start(["node", str(ROOT / "bench" / "origin.mjs")], {"PORT": str(origin_port),
                                                         "ORIGIN_DELAY_MS": os.environ.get("ORIGIN_DELAY_MS", "0")})
    redis_port = free_port()
    start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    peer_port = free_port()
    wk_port = free_port()
    origin_url = f"http://127.0.0.1:{origin_port}"
    wait_ready(origin_port, "/count")
    start(["node", str(ROOT / "bench" / "peer" / "server.js")],
          {"PORT": str(peer_port), "ORIGIN_URL": origin_url, "REDIS_URL": f"redis://127.0.0.1:{redis_port}"})
    start([str(ROOT / "x"), "dev", "--log-level", "warn"], {
        "PORT": str(wk_port), "IDEMGATE_STATE_DIR": str(tmp / "state"), "IDEMGATE_SKIP_BUILD": "1", "CI": "1",
        "AUTH_JWT_SECRET": SECRET, "UPSTREAM_BASE_URL": origin_url, "UPSTREAM_FUNCTIONS": "echo",
        "UPSTREAM_KEY_POLICY": "optional"}, log=open(tmp / "dev.log", "w"))
    floor_port = free_port()
    wrangler = str(ROOT / "node_modules" / ".bin" / "wrangler")
    floor_cfg = str(ROOT / "bench" / "floor" / "wrangler.toml")
    subprocess.run([wrangler, "d1", "migrations", "apply", "floor", "--local", "--config", floor_cfg,
                    "--persist-to", str(tmp / "floor-state")], env={**os.environ, "CI": "1"}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start([wrangler, "dev", "--config", floor_cfg, "--ip", "127.0.0.1", "--port", str(floor_port), "--persist-to",
           str(tmp / "floor-state"), "--var", f"UPSTREAM_URL:{origin_url}/floor-echo", "--log-level", "warn",
           "--show-interactive-dev-session=false"], {"CI": "1"}, log=open(tmp / "floor.log", "w"))
    wait_ready(wk_port)
    wait_ready(peer_port, "/plain/echo", "POST")
    wait_ready(floor_port)

    tok = make_token(SECRET, "bench", "bench", ttl=3600)
    auth = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    fn_body = tmp / "fn.json"
    fn_body.write_text(json.dumps({"order": 42, "amount": "19.99"}))
    docs = {}
    for name, size in (("1 KB", 1024), ("100 KB", 100 * 1024)):
        text = ("The quick brown fox jumps over the lazy dog. " * (size // 45 + 1))[:size - 80]
        p = tmp / f"doc-{size}.json"
        p.write_text(json.dumps({"filename": "bench.txt", "content_type": "text/plain", "content": text}))
        docs[name] = p
    # Warm up every path once (first request compiles, opens D1, creates objects).
    for port, path in ((wk_port, "/healthz"),):
        request(port, "GET", path)
    request(wk_port, "POST", "/functions/v1/echo", fn_body.read_bytes(), auth)
    request(wk_port, "POST", "/functions/v1/echo", fn_body.read_bytes(), {**auth, "idempotency-key": "warm"})
    request(peer_port, "POST", "/functions/echo", fn_body.read_bytes(), {"content-type": "application/json", "idempotency-key": "warm"})
    request(floor_port, "POST", "/functions/v1/echo", fn_body.read_bytes(), {"content-type": "application/json"})
    request(floor_port, "POST", "/functions/v1/echo", fn_body.read_bytes(), {"content-type": "application/json", "idempotency-key": "warm"})

    wk = f"http://127.0.0.1:{wk_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    replay_key = f"replay-{uuid.uuid4().hex[:8]}"
    scenarios = [
        ("GET /healthz (Worker floor)", f"{wk}/healthz", None),
        ("function, no key (passthrough)", f"{wk}/functions/v1/echo", lua(tmp / "pass.lua", auth, fn_body)),
        ("function, new key (first execution)", f"{wk}/functions/v1/echo", lua(tmp / "new.lua", auth, fn_body, new_key=True)),
        ("function, repeated key (replay)", f"{wk}/functions/v1/echo", lua(tmp / "rep.lua", auth, fn_body, key=replay_key)),
    ]
    for name, p in docs.items():
        scenarios.append((f"POST /v1/documents {name}, new key", f"{wk}/v1/documents", lua(tmp / f"dn{name[:3]}.lua", auth, p, new_key=True)))
        scenarios.append((f"POST /v1/documents {name}, replay", f"{wk}/v1/documents", lua(tmp / f"dr{name[:3]}.lua", auth, p, key=f"doc{len(name)}-{replay_key}")))
    peer_h = {"Content-Type": "application/json"}
    scenarios += [
        ("peer: origin via Express, no middleware", f"{peer}/plain/echo", lua(tmp / "ppass.lua", peer_h, fn_body)),
        ("peer: express-idempotency+Redis, new key", f"{peer}/functions/echo", lua(tmp / "pnew.lua", peer_h, fn_body, new_key=True)),
        ("peer: express-idempotency+Redis, replay", f"{peer}/functions/echo", lua(tmp / "prep.lua", peer_h, fn_body, key=replay_key)),
    ]
    floor = f"http://127.0.0.1:{floor_port}"
    hop = {**peer_h, "x-floor-hop": "1"}
    scenarios += [
        (FLOOR_HEALTHZ, f"{floor}/healthz", None),
        (FLOOR_HOP_SAME, f"{floor}/functions/v1/echo", lua(tmp / "fhops.lua", hop, fn_body, key=replay_key)),
        (FLOOR_HOP_NEW, f"{floor}/functions/v1/echo", lua(tmp / "fhopn.lua", hop, fn_body, new_key=True)),
        (FLOOR_PASS, f"{floor}/functions/v1/echo", lua(tmp / "fpass.lua", peer_h, fn_body)),
        (FLOOR_NEW, f"{floor}/functions/v1/echo", lua(tmp / "fnew.lua", peer_h, fn_body, new_key=True)),
    ]
    results = {}
    for name, url, script in scenarios:
        results[name] = {16: NOT_RUN}
        # The hop cells only feed the 1-connection split below; at 16 connections
        # they would create thousands more idle objects (local workerd holds ~10k
        # live SQLite objects before answering SQLITE_NOMEM until it evicts some).
        for c in (1,) if name in (FLOOR_HOP_SAME, FLOOR_HOP_NEW) else (1, 16):
            if script and "Idempotency-Key'] = prefix" in Path(script).read_text():
                # A fresh key prefix for each run, so the 16-connection run
                # never meets the keys of the 1-connection run.
                text = re.sub(r"local run = '[0-9a-f]+'", f"local run = '{uuid.uuid4().hex[:10]}'", Path(script).read_text())
                Path(script).write_text(text)
            results[name][c] = wrk(url, c, script)
        r1, r16 = results[name][1], results[name][16]
        print(f"  measured: {name}: p50 {fmt(r1['p50'])} ms (1 conn), {fmt(r16['rps'], 0)} req/s (16 conns)", file=sys.stderr)

    before = json.loads(request(origin_port, "GET", "/count")[2]).get("/echo", 0)
    st = storm(wk_port, auth, fn_body.read_bytes())
    st["executions"] = json.loads(request(origin_port, "GET", "/count")[2]).get("/echo", 0) - before

    prof_pass = profile(wk_port, auth, fn_body.read_bytes(), keyed=False)
    prof_new = profile(wk_port, auth, fn_body.read_bytes(), keyed=True)
    print_table(results, st, sizes)
    print()
    print("Where a request spends its time (Server-Timing means over 200 sequential requests, ms):")
    print("| request | client p50 | in the Worker | Worker → object → Worker | origin call |")
    print("|---|---:|---:|---:|---:|")
    print(f"| passthrough | {fmt(prof_pass['client p50'])} | {fmt(prof_pass.get('worker'))} | — | {fmt(prof_pass.get('upstream'))} |")
    print(f"| first execution | {fmt(prof_new['client p50'])} | {fmt(prof_new.get('worker'))} | {fmt(prof_new.get('gate'))} | "
          f"{fmt(prof_new.get('handler'))} |")
    print(f"state directory: {tmp / 'state'} ({'tmpfs' if str(tmp).startswith('/dev/shm') else 'disk'})")
    return 0


def print_table(results, st, sizes):
    print()
    print("| scenario | p50 ms (1 conn) | p99 ms (1 conn) | p50 ms (16 conns) | p99 ms (16 conns) | req/s (16 conns) | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        bad = r[1]["bad"] + r[16]["bad"]
        print(f"| {name} | {fmt(r[1]['p50'])} | {fmt(r[1]['p99'])} | {fmt(r[16]['p50'])} | {fmt(r[16]['p99'])} | "
              f"{fmt(r[16]['rps'], 0)} | {bad} |")
    print()
    print(f"storm: 500 concurrent requests, one key, Prefer: wait=10 — origin executions {st['executions']}, "
          f"identical 200 answers {st['answers']}{' (all identical)' if st['identical'] else ' (NOT all identical)'}, "
          f"wall time {st['wall_ms']:.0f} ms")
    print(f"release wasm: {sizes[0] / 1024:.0f} KiB raw, {sizes[1] / 1024:.0f} KiB gzip")
    hz = results["GET /healthz (Worker floor)"]
    pas = results["function, no key (passthrough)"]
    new = results["function, new key (first execution)"]
    rep = results["function, repeated key (replay)"]
    ppass = results["peer: origin via Express, no middleware"]
    pnew = results["peer: express-idempotency+Redis, new key"]
    overhead = new[1]["p50"] - pas[1]["p50"]
    peer_overhead = pnew[1]["p50"] - ppass[1]["p50"]
    rows = [
        ("first-execution overhead over passthrough (p50, 1 conn)", f"{overhead:.2f} ms ({new[1]['p50'] / pas[1]['p50']:.2f}×)",
         "≤ 3 ms", overhead <= 3.0),
        ("replay ÷ /healthz (p50, 1 conn)", f"{rep[1]['p50'] / hz[1]['p50']:.2f}×", "≤ 1.5×", rep[1]["p50"] / hz[1]["p50"] <= 1.5),
        ("distinct-key ÷ passthrough throughput (16 conns)", f"{new[16]['rps'] / pas[16]['rps'] * 100:.0f} %", "≥ 40 %",
         new[16]["rps"] / pas[16]["rps"] >= 0.4),
        ("idemgate overhead ÷ peer overhead (p50, 1 conn)", f"{overhead:.2f} / {peer_overhead:.2f} ms = {overhead / peer_overhead:.2f}×"
         if peer_overhead > 0 else f"{overhead:.2f} / {peer_overhead:.2f} ms", "< 1×", 0 < peer_overhead and overhead < peer_overhead),
        ("storm executions / identical answers", f"{st['executions']} / {st['answers']}", "1 / 500",
         st["executions"] == 1 and st["answers"] == 500 and st["identical"]),
        ("gzip'd wasm", f"{sizes[1] / 1024:.0f} KiB", "≤ 1024 KiB", sizes[1] <= 1024 * 1024),
    ]
    print()
    print("| ratio | measured | target | met |")
    print("|---|---:|---:|:---:|")
    for name, got, target, ok in rows:
        print(f"| {name} | {got} | {target} | {'yes' if ok else 'NO'} |")
    fpass, fnew = results[FLOOR_PASS], results[FLOOR_NEW]
    floor_overhead = fnew[1]["p50"] - fpass[1]["p50"]
    print()
    print("The floor: the same origin behind a hand-written JavaScript Worker (bench/floor) that does only the")
    print("storage steps of a first execution — a new SQLite-backed object per key, the lease write, the answer")
    print("write with its alarm, the D1 record behind it — with no auth, validation, fingerprint or wasm:")
    print()
    print("| measure | idemgate | floor | target |")
    print("|---|---:|---:|---:|")
    print(f"| first-execution overhead over passthrough (p50, 1 conn) | {overhead:.2f} ms | {floor_overhead:.2f} ms | ≤ 3 ms |")
    print(f"| distinct-key ÷ passthrough throughput (16 conns) | {new[16]['rps'] / pas[16]['rps'] * 100:.0f} % | "
          f"{fnew[16]['rps'] / fpass[16]['rps'] * 100:.0f} % | ≥ 40 % |")
    fh, fs, fn = results[FLOOR_HEALTHZ][1]["p50"], results[FLOOR_HOP_SAME][1]["p50"], results[FLOOR_HOP_NEW][1]["p50"]
    print()
    print(f"Of the floor's overhead (p50, 1 conn): the hop to an existing object {fs - fh:.2f} ms, a new object per key "
          f"{fn - fs:.2f} ms more, the lease, answer and D1 record writes the remaining {floor_overhead - (fn - fh):.2f} ms.")
    print()
    print(f"peer replay p50 {fmt(results['peer: express-idempotency+Redis, replay'][1]['p50'])} ms; "
          f"each cell: wrk, {DURATION} s, 1 connection (1 thread) or 16 connections (2 threads).")


if __name__ == "__main__":
    sys.exit(main())
