"""Fault injection: kill -9 the dev server (wrangler and workerd) in the middle of
a run of origin-function calls, restart it on the same state directory, and retry
every key with its body. Rerun with

    IDEMGATE_SKIP_BUILD=1 .venv/bin/pytest -q tests/e2e/test_fault_injection.py -s

What it counts (printed, then asserted):
- answered keys re-executed: keys whose answer the client received before the
  crash and that the origin saw called again after it (must be 0);
- changed answers: keys answered before the crash whose answer after the restart
  is not byte-identical (must be 0);
- keys never answered: keys with no 200 once the retries are done (must be 0);
- unanswered keys re-run: keys in flight at the crash that the origin ran again
  after the restart (allowed: their answer was never given), each of which must
  have reached the origin with the same idempotency-key header both times.

The origin's `/slowish` answers with a fresh nonce on every run, so a second run
of a request always shows as a different answer; the client key rides in the body,
so calls are matched to keys whatever key header idemgate derives for the origin.
"""

import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from conftest import Client, Server, unique
from origin import Origin

KEYS = 240
CONNECTIONS = 16
CRASH_AFTER = KEYS // 3      # answered keys before the kill
RETRY_SECONDS = 90           # per key, after the restart
PATH = "/functions/v1/slowish"


def send(srv, client, key, body):
    """One call; `None` when the connection fails (the server is down or dies)."""
    headers = client.headers(key, {"prefer": "wait=10"})
    try:
        return srv.request("POST", PATH, body, headers, timeout=30)
    except (OSError, http.client.HTTPException):
        return None


def quiet_on_dropped_connections(origin):
    """The kill drops workerd's connections to the origin mid-answer: not worth a
    traceback each. Any other error in the origin is still printed."""
    server = origin.server
    default = server.handle_error

    def handle_error(request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            default(request, client_address)

    server.handle_error = handle_error


def test_kill_9_mid_run_reexecutes_no_answered_key_and_changes_no_answer():
    origin = Origin().start()
    quiet_on_dropped_connections(origin)
    state = tempfile.mkdtemp(prefix="idemgate-fault-")
    srv = Server(state_dir=state, UPSTREAM_BASE_URL=origin.url, UPSTREAM_FUNCTIONS="slowish",
                 IDEMPOTENCY_LEASE_SECONDS=3, UPSTREAM_TIMEOUT_MS=5000)
    passed = False
    try:
        srv.start()
        c = Client(srv, unique("fault"))
        run = unique("run")
        keys = [f"{run}-k{i:03d}" for i in range(KEYS)]
        bodies = {k: json.dumps({"key": k, "amount": i}) for i, k in enumerate(keys)}

        # Phase 1: every key once, 16 at a time, until the crash.
        lock = threading.Lock()
        before = {}                      # key -> body of the 200 received before the crash
        statuses = Counter()
        stop = threading.Event()
        enough = threading.Event()

        def first(k):
            if stop.is_set():
                return
            r = send(srv, c, k, bodies[k])
            with lock:
                statuses[r.status if r else "no answer"] += 1
                if r is not None and r.status == 200:
                    before[k] = r.body
                    if len(before) >= CRASH_AFTER:
                        enough.set()

        started = time.time()
        with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
            futures = [pool.submit(first, k) for k in keys]
            assert enough.wait(120), f"only {len(before)} keys answered: {statuses}"
            stop.set()                   # no new requests; those in flight meet the kill
            srv.crash()                  # SIGKILL the process group: wrangler and workerd
            crashed_at = time.time()
            for f in futures:
                f.result()
        answered_before = dict(before)   # every 200 received, all of them before the kill
        phase1_calls = len(origin.slowish_calls)

        # Phase 2: restart on the same state; retry every key with its key and body.
        restarted_at = time.time()
        srv.start()
        ready_at = time.time()
        after = {}                       # key -> last reply after the restart
        tries = Counter()

        def retry(k):
            deadline = time.time() + RETRY_SECONDS
            delay = 0.2
            while True:
                r = send(srv, c, k, bodies[k])
                with lock:
                    tries[k] += 1
                    if r is not None:
                        after[k] = r
                if r is not None and r.status not in (409, 503):
                    return
                if time.time() > deadline:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

        with ThreadPoolExecutor(max_workers=CONNECTIONS) as pool:
            list(pool.map(retry, keys))
        finished = time.time()

        # What the origin saw, per client key (from the body).
        calls = defaultdict(list)        # key -> [(arrived, key header, nonce)]
        with origin.lock:
            for arrived, header, body, nonce in origin.slowish_calls:
                calls[json.loads(body)["key"]].append((arrived, header, nonce))
        during_outage = [k for k, cs in calls.items() for t, _, _ in cs if crashed_at < t < restarted_at]
        reexecuted = sorted(k for k in answered_before if any(t >= restarted_at for t, _, _ in calls[k]))
        changed = sorted(k for k, b in answered_before.items() if k not in after or after[k].body != b)
        never = sorted(k for k in keys if k not in after or after[k].status != 200)
        unanswered = [k for k in keys if k not in answered_before]
        rerun = sorted(k for k in unanswered
                       if any(t < crashed_at for t, _, _ in calls[k]) and any(t >= restarted_at for t, _, _ in calls[k]))
        rerun_header_mismatch = sorted(k for k in rerun if len({h for _, h, _ in calls[k]}) != 1
                                       or calls[k][0][1] in (None, ""))
        # Every final answer is one the origin produced for that very key.
        foreign = sorted(k for k in keys if k in after and after[k].status == 200
                         and (json.loads(after[k].body)["body"] != bodies[k]
                              or json.loads(after[k].body)["nonce"] not in {n for _, _, n in calls[k]}))
        multi_before_crash = sorted(k for k in keys if sum(t < crashed_at for t, _, _ in calls[k]) > 1)
        in_flight_kept = sum(1 for k in unanswered if calls[k] and all(t < crashed_at for t, _, _ in calls[k]))
        never_called_before = sum(1 for k in unanswered if not any(t < crashed_at for t, _, _ in calls[k]))
        replayed = sum(1 for k in keys if k in after and after[k].header("idempotent-replayed") == "true")

        print()
        print(f"fault injection: {KEYS} keys, {CONNECTIONS} connections, kill -9 "
              f"{crashed_at - started:.1f} s in; restart {ready_at - restarted_at:.1f} s; "
              f"retries {finished - ready_at:.1f} s")
        print(f"  phase 1 replies: {dict(statuses)}; origin calls before the crash: {phase1_calls}")
        print(f"  answered before the crash:                 {len(answered_before)}")
        print(f"  answered keys re-executed after the crash: {len(reexecuted)}")
        print(f"  changed answers:                           {len(changed)}")
        print(f"  keys never answered:                       {len(never)}")
        print(f"  unanswered keys re-run at the origin:      {len(rerun)} "
              f"(same key header both times: {len(rerun) - len(rerun_header_mismatch)})")
        print(f"  unanswered keys whose pre-crash run was kept (no second call): {in_flight_kept}")
        print(f"  unanswered keys first called after the restart: {never_called_before}")
        print(f"  keys called more than once before the crash: {len(multi_before_crash)}")
        print(f"  origin calls while the server was down: {len(during_outage)}")
        print(f"  answers for another key or not from the origin: {len(foreign)}")
        print(f"  phase 2: {sum(tries.values())} requests, {replayed} replays, "
              f"statuses {dict(Counter(r.status for r in after.values()))}")

        assert reexecuted == [], reexecuted
        assert changed == [], [(k, answered_before[k], after[k].body if k in after else None) for k in changed]
        assert never == [], [(k, after.get(k)) for k in never]
        assert rerun_header_mismatch == [], {k: calls[k] for k in rerun_header_mismatch}
        assert foreign == [], foreign
        assert multi_before_crash == [], multi_before_crash
        assert during_outage == [], during_outage
        passed = True
    finally:
        srv.cleanup()
        origin.stop()
        if passed:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"state directory kept for inspection: {state}")
