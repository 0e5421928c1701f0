"""Fault campaign: client threads send keyed requests while the harness SIGKILLs
the dev server's process group at random moments and restarts it on the same
state directory; afterwards the origin's call log, the clients' replies and D1
are checked against the idempotency contract and the fencing token.

    .venv/bin/python tests/e2e/faults.py --rounds 10 [--requests 60] [--seed N]
    ./x faults [ROUNDS]

tests/e2e/test_fault_campaign.py runs a short form. One round: the client
threads share `requests` operations — a new key on the origin function
`/functions/v1/scripted` (scripted at the origin to answer at once, answer 503
first, or stall shorter or longer than the gateway's timeout; one in five sent
twice at once, as a client retrying while its first attempt runs), a new document
(`POST /v1/documents`), the same request again for an earlier key (a replay, or
a re-run if the key was released), a DELETE of a completed key — and the harness
kills the server once, when a random share of them is done, then restarts it.
Clients retry like a real client: on no answer, 409 and 5xx, with backoff, for
up to two minutes. After the last round every key still without a 2xx is retried
until it has one, the mirrors are given time to reach D1, and D1 is read.

The seed drives every choice (operations, scripts, kill moments); the threads'
interleaving and the server's timing still vary from run to run.

Invariants. Those marked fence need the `Idempotency-Fence` header on origin
calls; the others hold without it:
- answers_from_origin: every 2xx a client got for a function key is the answer
  of one origin call carrying that key's derived Idempotency-Key, byte for byte.
- no_call_after_seen_answer: once a client got a 2xx for a key, the origin
  receives no other call for that key unless a DELETE of it came in between.
- no_double_2xx: no two calls of a key both answered 2xx to the gateway unless
  a DELETE or a kill of the server came in between (a kill may lose an answer
  the gateway had not made durable yet; such pairs are counted and shown apart).
  A kill counts from its SIGKILL until no process of the server's group is left.
- replies_consistent: a key's 2xx replies are identical between DELETEs, and
  the first 2xx after a DELETE that answered 204 is a new execution.
- deletes_find_completed_keys: a DELETE of a key whose client got a 2xx answers
  204, or 404 only when an earlier attempt of the same DELETE went unanswered.
- every_key_answered: every key not released ends with a 2xx.
- records_in_d1 (iii): every key's last 2xx (not released after it) is in D1's
  idempotency_records with the same status and body, within 90 s of the last
  restart.
- released_stay_released (iv): a key whose last operation was a DELETE answered
  204 has no record in D1 after the settle time.
- documents_once: each document key with a 2xx has exactly one documents row,
  the one its answer names.
- fence_on_every_call (fence): every origin call of a keyed execution carries
  `Idempotency-Fence`, a decimal integer from 1 to 2^53.
- fences_increase (fence, ii): per key, fences strictly increase in the order
  the origin received the calls.
- no_repeated_fence (fence, i): no key whose client got a 2xx was executed
  twice with the same fence.
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import Client, Server, forwarded_key, scope_of, text_doc, unique  # noqa: E402
from origin import Origin, Stall  # noqa: E402
from test_fault_injection import quiet_on_dropped_connections  # noqa: E402

FUNCTION = "scripted"
FN_ROUTE = f"POST /functions/v1/{FUNCTION}"
DOC_ROUTE = "POST /v1/documents"
UPSTREAM_TIMEOUT_MS = 3000
LEASE_SECONDS = 2
REQUEST_TIMEOUT = 20          # one HTTP attempt
OP_SECONDS = 120              # one operation, all its attempts
RETRY = {409, 500, 502, 503, 504}
RECORDS_WITHIN = 90           # (iii): after the last restart
SETTLE_SECONDS = 15           # (iv): after the last DELETE, before D1's final read

FENCE_INVARIANTS = ("fence_on_every_call", "fences_increase", "no_repeated_fence")
FENCE_FREE_INVARIANTS = ("answers_from_origin", "no_call_after_seen_answer", "no_double_2xx",
                         "replies_consistent", "deletes_find_completed_keys", "every_key_answered",
                         "records_in_d1", "released_stay_released", "documents_once")


@dataclass
class Attempt:
    sent: float
    done: float
    status: int | None        # None: no answer (connection refused or dropped, timeout)


@dataclass
class Op:
    kind: str                 # "run" (the key's request) or "delete"
    attempts: list = field(default_factory=list)
    reply: object = None      # the last attempt's Reply, if it had one

    @property
    def sent(self):
        return self.attempts[0].sent

    @property
    def done(self):
        return self.attempts[-1].done

    @property
    def status(self):
        return self.reply.status if self.reply is not None else None

    @property
    def ok(self):
        return self.kind == "run" and self.status is not None and 200 <= self.status < 300


@dataclass
class Key:
    name: str
    kind: str                 # "fn" or "doc"
    client: object
    body: object
    derived: str | None       # the Idempotency-Key the origin receives (functions)
    ops: list = field(default_factory=list)

    @property
    def scope(self):
        return scope_of(self.client.tenant, self.client.sub)

    @property
    def route(self):
        return FN_ROUTE if self.kind == "fn" else DOC_ROUTE

    @property
    def last(self):
        return self.ops[-1] if self.ops else None


def is_2xx(status):
    return status is not None and 200 <= status < 300


class Campaign:
    def __init__(self, rounds, requests, seed=None, threads=4, docs=True, log=print):
        self.rounds = rounds
        self.requests = requests
        self.seed = seed if seed is not None else random.randrange(2**32)
        self.threads = threads
        self.docs = docs
        self.log = log
        self.rng = random.Random(self.seed)
        self.keys = []                 # every Key, in order of creation
        self.keys_lock = threading.Lock()
        self.kills = []                # (issued, gone): time.time() of each SIGKILL and of its end
        self.ready = []                # time.time() each time the server was ready
        self.violations = {name: [] for name in FENCE_FREE_INVARIANTS + FENCE_INVARIANTS}
        self.checked = Counter()       # invariant -> how many things it looked at
        self.notes = Counter()         # other counts for the summary
        self.repeated = []             # 2xx executions repeated across a kill (allowed, shown)

    # ---- the run -------------------------------------------------------------

    def run(self):
        self.log(f"fault campaign: seed {self.seed}, {self.rounds} rounds x {self.requests} requests, "
                 f"{self.threads} client threads")
        started = time.time()
        self.origin = Origin().start()
        quiet_on_dropped_connections(self.origin)
        self.state = tempfile.mkdtemp(prefix="idemgate-faults-")
        self.srv = Server(state_dir=self.state, UPSTREAM_BASE_URL=self.origin.url, UPSTREAM_FUNCTIONS=FUNCTION,
                          IDEMPOTENCY_LEASE_SECONDS=LEASE_SECONDS, UPSTREAM_TIMEOUT_MS=UPSTREAM_TIMEOUT_MS)
        ok = False
        try:
            self.srv.start()
            self.ready.append(time.time())
            tenant = unique("faults")
            self.clients = [Client(self.srv, f"{tenant}-c{i}", tenant) for i in range(self.threads)]
            self.tenant = tenant
            for r in range(self.rounds):
                self.round(r)
            self.resolve()
            self.read_d1()
            self.check()
            self.elapsed = time.time() - started
            self.summary()
            ok = True
            return self
        finally:
            self.srv.stop()
            self.origin.stop()
            # Kept when the run broke or an invariant that needs no fence failed.
            if ok and not self.failed(fence=False):
                shutil.rmtree(self.state, ignore_errors=True)
            else:
                self.log(f"state directory kept for inspection: {self.state}")

    def round(self, r):
        done = Counter()
        lock = threading.Lock()
        share = [self.requests // self.threads + (i < self.requests % self.threads) for i in range(self.threads)]
        kill_after = max(1, int(self.requests * self.rng.uniform(0.2, 0.8)))
        jitter = self.rng.uniform(0, 0.5)
        reached = threading.Event()
        rngs = [random.Random(f"{self.seed}-{r}-{i}") for i in range(self.threads)]

        errors = []

        def client(i):
            try:
                for _ in range(share[i]):
                    self.operation(i, rngs[i])
                    with lock:
                        done["ops"] += 1
                        if done["ops"] >= kill_after:
                            reached.set()
            except BaseException as e:  # re-raised by the round, after the restart
                errors.append(e)
                reached.set()

        workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(self.threads)]
        for w in workers:
            w.start()
        reached.wait()
        time.sleep(jitter)
        self.kill()
        down = time.time()
        self.srv.start()
        self.ready.append(time.time())
        self.log(f"  round {r + 1}: killed after {done['ops']} of {self.requests} operations "
                 f"(+{jitter:.2f} s); restarted in {self.ready[-1] - down:.1f} s")
        for w in workers:
            w.join()
        if errors:
            raise errors[0]

    def kill(self):
        """SIGKILLs the server's process group and waits until no process of it is
        left; records (issued, gone): a call the origin received before `gone`
        may have had its answer lost with the server."""
        group = self.srv.proc.pid
        issued = time.time()
        self.srv.crash()
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        else:
            raise RuntimeError(f"processes of group {group} outlived SIGKILL by 15 s")
        self.kills.append((issued, time.time()))

    def operation(self, i, rng):
        """One client operation of thread `i`: a new key, a replay or re-run of
        one of its keys, or a DELETE of one of its completed function keys."""
        client = self.clients[i]
        with self.keys_lock:
            mine = [k for k in self.keys if k.client is client]
        finished = [k for k in mine if k.last.ok or k.last.kind == "delete"]
        completed_fn = [k for k in mine if k.kind == "fn" and k.last.ok]
        roll = rng.random()
        if finished and roll < 0.2:
            self.run_key(rng.choice(finished))
        elif completed_fn and roll < 0.3:
            self.delete_key(rng.choice(completed_fn))
        elif self.docs and roll < 0.45:
            name = f"{client.sub}-d{len(mine)}"
            self.run_key(self.new_key(name, "doc", client, text_doc(f"{name} {rng.random()} words here.")))
        else:
            name = f"{client.sub}-f{len(mine)}"
            key = self.new_key(name, "fn", client, {"key": name, "n": rng.randrange(10**6)})
            # What the origin does with the key's first calls (then it answers 200).
            script = rng.choices(
                [(), (503,), (Stall(rng.uniform(0.2, 1.5)),), (Stall(UPSTREAM_TIMEOUT_MS / 1000 + 2),),
                 (503, Stall(0.5))],
                weights=[55, 15, 15, 5, 10])[0]
            if script:
                self.origin.script(key.derived, *script)
            # Now and then the same request twice at once, as a client that retries
            # while its first attempt is still running: one execution, one answer.
            self.run_key(key, copies=2 if rng.random() < 0.2 else 1)

    def new_key(self, name, kind, client, body):
        derived = forwarded_key(scope_of(client.tenant, client.sub), FN_ROUTE, name) if kind == "fn" else None
        key = Key(name, kind, client, body, derived)
        with self.keys_lock:
            self.keys.append(key)
        return key

    def attempt(self, method, path, body, headers):
        """One HTTP attempt; a Reply, or None when there was no answer."""
        try:
            return self.srv.request(method, path, body, headers, timeout=REQUEST_TIMEOUT)
        except (OSError, http.client.HTTPException):
            return None

    def perform(self, key, op, method, path, body, headers):
        """Sends until an answer that is not worth retrying, or OP_SECONDS pass."""
        deadline = time.time() + OP_SECONDS
        delay = 0.2
        key.ops.append(op)
        while True:
            sent = time.time()
            reply = self.attempt(method, path, body, headers)
            op.attempts.append(Attempt(sent, time.time(), reply.status if reply is not None else None))
            op.reply = reply
            if reply is not None and reply.status not in RETRY:
                return op
            if time.time() > deadline:
                return op
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def run_key(self, key, copies=1):
        """The key's request (the same body every time), `copies` at once, each
        an operation of its own."""
        path = f"/functions/v1/{FUNCTION}" if key.kind == "fn" else "/v1/documents"
        headers = key.client.headers(key.name, {"prefer": "wait=5"})
        if copies == 1:
            return self.perform(key, Op("run"), "POST", path, key.body, headers)
        threads = [threading.Thread(target=self.perform, args=(key, Op("run"), "POST", path, key.body, headers))
                   for _ in range(copies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def delete_key(self, key):
        path = f"/v1/idempotency/keys/{key.name}?route=/functions/v1/{FUNCTION}"
        return self.perform(key, Op("delete"), "DELETE", path, None, key.client.headers())

    def resolve(self):
        """After the last round: every key whose last operation is a request
        without a 2xx is sent again until it has one (or OP_SECONDS pass)."""
        pending = [k for k in self.keys if k.last.kind == "run" and not k.last.ok]
        threads = [threading.Thread(target=lambda part: [self.run_key(k) for k in part],
                                    args=(pending[i::self.threads],)) for i in range(self.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.notes["keys retried after the last round"] = len(pending)

    def read_d1(self):
        """D1's records of the campaign's keys once every expected record is there
        with its answer (or RECORDS_WITHIN seconds after the last restart), then
        again SETTLE_SECONDS after the last DELETE: what (iii) and (iv) judge."""
        expected = self.expected_records()
        deadline = self.ready[-1] + RECORDS_WITHIN
        while True:
            rows = self.records()
            missing = [k for k, (status, body) in expected.items() if rows.get(k) != (status, body)]
            if not missing or time.time() > deadline:
                break
            time.sleep(1)
        self.records_landed = time.time() - self.ready[-1]
        deletes = [op.done for k in self.keys for op in k.ops if op.kind == "delete"]
        last_delete = max(deletes, default=0)
        time.sleep(max(0.0, last_delete + SETTLE_SECONDS - time.time()))
        self.d1_records = self.records()
        self.d1_documents = self.srv.d1(
            f"SELECT id, created_by, idempotency_key FROM documents WHERE tenant = '{self.tenant}'")

    def records(self):
        rows = self.srv.d1("SELECT scope, route, key, response_status, response_body, body_chunks "
                           f"FROM idempotency_records WHERE scope LIKE '{self.tenant}:%'")
        out = {}
        for row in rows:
            # One chunk holds every answer of this campaign (they are small).
            body = base64.b64decode(row["response_body"]) if row["body_chunks"] == 1 else None
            out[(row["scope"], row["route"], row["key"])] = (row["response_status"], body)
        return out

    def expected_records(self):
        """(scope, route, key) -> (status, body) of each key's last 2xx, for keys
        whose last operation is that 2xx (not released after it)."""
        return {(k.scope, k.route, k.name): (k.last.status, k.last.reply.body)
                for k in self.keys if k.last.ok}

    # ---- the checks ----------------------------------------------------------

    def violation(self, name, what):
        self.violations[name].append(what)

    def check(self):
        with self.origin.lock:
            log = list(self.origin.log)
        by_derived = {}
        for c in log:
            by_derived.setdefault(c.key, []).append(c)
        self.executions = sum(1 for c in log if c.path == f"/{FUNCTION}")
        for k in self.keys:
            calls = by_derived.get(k.derived, []) if k.kind == "fn" else []
            if k.kind == "fn":
                self.check_function_key(k, calls, log)
            self.check_replies(k)
            self.check_deletes(k)
            self.checked["every_key_answered"] += 1
            if k.last.kind == "run" and not k.last.ok:
                self.violation("every_key_answered", f"{k.name}: last reply {k.last.reply!r}")
        # Keyless calls never happen here; a call with a key no client key derives is foreign.
        known = {k.derived for k in self.keys if k.kind == "fn"}
        for c in log:
            if c.path == f"/{FUNCTION}" and c.key not in known:
                self.violation("answers_from_origin", f"origin call with an unknown key: {c.line()}")
        self.check_d1()

    def check_function_key(self, k, calls, log):
        # DELETEs that may have released the key: one attempt answered 204 or
        # went unanswered (an answered 404 or 409 released nothing).
        deletes = [op for op in k.ops if op.kind == "delete"
                   and any(a.status in (204, None) for a in op.attempts)]

        def deleted_between(start, end):
            return any(start < d.sent and d.done < end for d in deletes)

        # answers_from_origin and no_call_after_seen_answer
        for op in k.ops:
            if not op.ok:
                continue
            self.checked["answers_from_origin"] += 1
            try:
                seq = json.loads(op.reply.body)["call"]
                source = log[seq - 1]
            except (ValueError, KeyError, IndexError, TypeError):
                self.violation("answers_from_origin", f"{k.name}: a 2xx the origin did not make: {op.reply!r}")
                continue
            if source.key != k.derived or source.status != op.status or source.answer != op.reply.body:
                self.violation("answers_from_origin", f"{k.name}: {op.reply!r} is not the answer of {source.line()}")
                continue
            self.checked["no_call_after_seen_answer"] += 1
            for c in calls:
                if c.arrived > source.arrived and not deleted_between(source.arrived, c.arrived):
                    self.violation("no_call_after_seen_answer",
                                   f"{k.name}: the client saw call {source.seq}'s answer, then {c.line()}")
        # no_double_2xx
        answered = [c for c in calls if is_2xx(c.status)]
        for a, b in zip(answered, answered[1:]):
            self.checked["no_double_2xx"] += 1
            if deleted_between(a.arrived, b.arrived):
                continue
            kills = [(issued, gone) for issued, gone in self.kills if a.arrived < gone and issued < b.arrived]
            if kills:
                self.notes["2xx executions repeated across a kill"] += 1
                self.repeated.append(f"{k.name}: {a.line()}, the kill issued {kills[0][0]:.3f}, "
                                     f"the server gone {kills[0][1]:.3f}, then {b.line()}")
                continue
            self.violation("no_double_2xx", f"{k.name}: {a.line()} then {b.line()} with no DELETE or kill between")
        # The fence invariants.
        fences = []
        for c in calls:
            self.checked["fence_on_every_call"] += 1
            f = c.fence
            if f is None or not re.fullmatch(r"[1-9][0-9]*", f) or int(f) > 2**53:
                self.violation("fence_on_every_call", f"{k.name}: no valid Idempotency-Fence: {c.line()}")
                fences.append(None)
            else:
                fences.append(int(f))
        if len(calls) > 1:
            self.checked["fences_increase"] += 1
            if None in fences or any(a >= b for a, b in zip(fences, fences[1:])):
                self.violation("fences_increase", f"{k.name}: fences {fences} in arrival order "
                                                  f"(calls {[c.seq for c in calls]})")
            if any(op.ok for op in k.ops):
                self.checked["no_repeated_fence"] += 1
                if None in fences or len(set(fences)) != len(fences):
                    self.violation("no_repeated_fence", f"{k.name}: fences {fences}")

    def check_replies(self, k):
        """replies_consistent: between DELETEs a key's 2xx replies are one answer;
        after a DELETE that answered 204 the first 2xx is a new execution."""
        previous = None         # the last 2xx reply body
        released = False        # a DELETE answered 204 since `previous`
        uncertain = False       # a DELETE whose outcome is unknown since `previous`
        for op in k.ops:
            if op.kind == "delete":
                released |= op.status == 204
                uncertain |= op.status != 204
                continue
            if not op.ok:
                continue
            if previous is not None:
                self.checked["replies_consistent"] += 1
                if released and op.reply.body == previous:
                    self.violation("replies_consistent", f"{k.name}: the answer from before its release: {op.reply!r}")
                if not released and not uncertain and op.reply.body != previous:
                    self.violation("replies_consistent", f"{k.name}: {op.reply!r} after {previous!r}")
            previous, released, uncertain = op.reply.body, False, False

    def check_deletes(self, k):
        """deletes_find_completed_keys: every DELETE here follows a 2xx of its key."""
        for op in k.ops:
            if op.kind != "delete":
                continue
            self.checked["deletes_find_completed_keys"] += 1
            unanswered_before = any(a.status is None for a in op.attempts[:-1])
            if op.status == 204 or (op.status == 404 and unanswered_before):
                continue
            self.violation("deletes_find_completed_keys",
                           f"{k.name}: DELETE answered {op.reply!r} after attempts {[a.status for a in op.attempts]}")

    def check_d1(self):
        expected = self.expected_records()
        for where, (status, body) in expected.items():
            self.checked["records_in_d1"] += 1
            got = self.d1_records.get(where)
            if got != (status, body):
                self.violation("records_in_d1", f"{where}: expected {status} {body[:120]!r}, D1 has "
                                                f"{None if got is None else (got[0], (got[1] or b'')[:120])}")
        for k in self.keys:
            if k.last.kind == "delete" and k.last.status == 204:
                self.checked["released_stay_released"] += 1
                if (k.scope, k.route, k.name) in self.d1_records:
                    self.violation("released_stay_released", f"{k.name}: released, yet D1 has its record")
        # A document row names its tenant, the subject that created it and the client's key.
        rows = Counter((d["created_by"], d["idempotency_key"]) for d in self.d1_documents)
        ids = {(d["created_by"], d["idempotency_key"]): d["id"] for d in self.d1_documents}
        for k in self.keys:
            if k.kind != "doc" or not k.last.ok:
                continue
            self.checked["documents_once"] += 1
            where = (k.client.sub, k.name)
            if rows[where] != 1 or ids.get(where) != json.loads(k.last.reply.body).get("id"):
                self.violation("documents_once", f"{k.name}: {rows[where]} documents rows "
                                                 f"(id {ids.get(where)}), answer {k.last.reply!r}")

    # ---- the verdict ---------------------------------------------------------

    def failed(self, fence):
        names = FENCE_FREE_INVARIANTS + (FENCE_INVARIANTS if fence else ())
        return any(self.violations[n] for n in names)

    def summary(self):
        ops = [op for k in self.keys for op in k.ops]
        attempts = [a for op in ops for a in op.attempts]
        with self.origin.lock:
            calls = [c for c in self.origin.log if c.path == f"/{FUNCTION}"]
        replayed = sum(1 for op in ops if op.reply is not None and op.reply.header("idempotent-replayed") == "true")
        self.log(f"  {self.rounds} rounds, {len(self.kills)} kills, {len(self.keys)} keys "
                 f"({sum(k.kind == 'fn' for k in self.keys)} function, {sum(k.kind == 'doc' for k in self.keys)} document), "
                 f"{len(ops)} operations, {len(attempts)} HTTP requests, {self.elapsed:.0f} s")
        self.log(f"  final statuses: {dict(Counter(op.status for op in ops))}; replays {replayed}; "
                 f"attempt statuses: {dict(Counter(a.status for a in attempts))}")
        self.log(f"  origin executions: {len(calls)} (answered: {dict(Counter(c.status for c in calls))})")
        self.log(f"  records in D1 {self.records_landed:.1f} s after the last restart; "
                 + "; ".join(f"{n}: {v}" for n, v in self.notes.items()))
        for what in self.repeated[:5]:
            self.log(f"      {what}")
        for name in FENCE_FREE_INVARIANTS + FENCE_INVARIANTS:
            tag = " (fence)" if name in FENCE_INVARIANTS else ""
            bad = self.violations[name]
            self.log(f"  {name}{tag}: {self.checked[name]} checked, {len(bad)} violations")
            for what in bad[:5]:
                self.log(f"      {what}")


def main():
    p = argparse.ArgumentParser(description="idemgate's fault campaign (see the module's docstring)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--requests", type=int, default=60, help="client operations per round")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-fence", action="store_true", help="judge only the invariants that need no fence")
    a = p.parse_args()
    c = Campaign(a.rounds, a.requests, a.seed, a.threads).run()
    failed = c.failed(fence=not a.no_fence)
    print(f"fault campaign (seed {c.seed}): {'FAILED' if failed else 'passed'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
