"""A small origin function and trainer server on 127.0.0.1 that counts the calls
it receives (started in-process by the tests).

Every POST it receives, whatever its path, is also appended to `Origin.log` as a
`Call` (see there): its arrival, path, the `Idempotency-Key` and
`Idempotency-Fence` headers as received, and the status it answered — `None` when
it never answered because the caller hung up first (a killed server, a gateway
timeout). `/scripted` (and `/scripted-*`, so one server can front it under
several names) answers each call as the test scripted it for the call's
`Idempotency-Key` (`Origin.script`): a status, or a stall, in order, then 200."""

import json
import select
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Listener(ThreadingHTTPServer):
    # socketserver's default backlog is 5: sixteen concurrent calls from the
    # Worker overflowed it (the kernel's ListenOverflows counter rose during
    # test_record_batching's 1 000 calls at 16 connections), and on a loaded
    # machine a dropped connection became a 502 from an origin that was up.
    request_queue_size = 128


@dataclass
class Call:
    """One POST the origin received."""
    seq: int                      # 1, 2, ... in order of arrival, over every path
    path: str
    key: str | None               # the Idempotency-Key header as received (idemgate's derived key)
    fence: str | None             # the Idempotency-Fence header as received
    body: bytes
    arrived: float                # time.time() when its headers and body were read
    status: int | None = None     # the status line sent; None: never answered (the caller hung up)
    answer: bytes | None = None   # the body sent with it (answers made by `reply`)
    finished: float | None = None  # time.time() when the origin was done with it (answered or not)

    def line(self):
        """The call as one JSON line (what the campaign prints for a failed check)."""
        return json.dumps({"seq": self.seq, "path": self.path, "key": self.key, "fence": self.fence,
                           "status": self.status, "arrived": round(self.arrived, 3),
                           "finished": None if self.finished is None else round(self.finished, 3)})


@dataclass(frozen=True)
class Stall:
    """A scripted action: hold the call for `seconds`, then answer `status`; if the
    caller hangs up meanwhile, answer nothing (the call's status stays None)."""
    seconds: float
    status: int = 200


class Origin:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = defaultdict(int)          # path -> count
        self.requests = defaultdict(list)      # path -> [(headers, body)]
        self.flaky_failed = set()              # idempotency keys that got their 500
        self.trainer_status = 202
        self.destination_status = 200
        self.destination_gives_reference = True   # False: a 2xx with no reference
        self.rollback_status = 200
        # /slowish: one (arrival time, idempotency-key header, request body, nonce) per call.
        self.slowish_calls = []
        self.cut_off = 0                       # requests whose body never fully arrived (not run)
        self.log = []                          # every POST received: [Call], in order of arrival
        self.scripts = {}                      # idempotency-key header -> deque of actions (/scripted)
        self.server = None
        self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def count(self, path):
        with self.lock:
            return self.calls[path]

    def script(self, key, *actions):
        """How `/scripted` answers the next calls carrying `key` (the derived key
        the origin receives), one action per call in order: a status (answered at
        once) or a `Stall`. Once they are used up, calls are answered 200."""
        with self.lock:
            self.scripts[key] = deque(actions)

    def next_action(self, key):
        with self.lock:
            actions = self.scripts.get(key)
            return actions.popleft() if actions else 200

    def calls_for(self, key, path=None):
        """The calls received with this Idempotency-Key header (on `path` if given),
        in order of arrival."""
        with self.lock:
            return [c for c in self.log if c.key == key and (path is None or c.path == path)]

    def start(self, port=0):
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            call = None  # this request's entry in origin.log

            def log_message(self, *args):
                pass

            def send_response(self, code, message=None):
                # Every answer's status line passes here, whichever path made it.
                if self.call is not None:
                    self.call.status = code
                super().send_response(code, message)

            def wait_unless_hung_up(self, seconds):
                """Holds the call for `seconds`; False as soon as the caller closes
                its connection (it sends nothing else while it waits for this answer,
                so a readable socket with no bytes is its hang-up)."""
                deadline = time.time() + seconds
                while (left := deadline - time.time()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                return False
                        except OSError:
                            return False
                        time.sleep(0.05)
                return True

            def reply(self, status, body, headers=()):
                data = json.dumps(body).encode()
                if self.call is not None:
                    self.call.answer = data
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-body (a killed workerd): as for any
                    # HTTP server, an incomplete request runs nothing.
                    with origin.lock:
                        origin.cut_off += 1
                    self.close_connection = True
                    return
                path = self.path
                key = self.headers.get("idempotency-key")
                with origin.lock:
                    origin.calls[path] += 1
                    n = origin.calls[path]
                    origin.requests[path].append(({k.lower(): v for k, v in self.headers.items()}, body))
                    self.call = Call(seq=len(origin.log) + 1, path=path, key=key,
                                     fence=self.headers.get("idempotency-fence"), body=body, arrived=time.time())
                    origin.log.append(self.call)
                try:
                    self.answer(path, key, body, n)
                finally:
                    self.call.finished = time.time()

            def answer(self, path, key, body, n):
                if path == "/scripted" or path.startswith("/scripted-"):
                    # As scripted for this key (Origin.script), then 200. The answer
                    # names the call, so a client's reply shows which run made it.
                    action = origin.next_action(key)
                    status = action
                    if isinstance(action, Stall):
                        if not self.wait_unless_hung_up(action.seconds):
                            self.close_connection = True
                            return
                        status = action.status
                    self.reply(status, {"call": self.call.seq, "key": key, "fence": self.call.fence,
                                        "body": body.decode(errors="replace")})
                elif path == "/echo":
                    self.reply(200, {"call": n, "body": body.decode(errors="replace"), "key": key,
                                     "content_type": self.headers.get("content-type"),
                                     "authorization": self.headers.get("authorization")},
                               [("x-origin-call", str(n)), ("set-cookie", "session=secret"), ("etag", f'"e{n}"')])
                elif path == "/reject":
                    self.reply(422, {"error": "invalid order", "call": n})
                elif path == "/flaky":
                    with origin.lock:
                        first = key not in origin.flaky_failed
                        origin.flaky_failed.add(key)
                    if first:
                        self.reply(500, {"error": "transient", "call": n})
                    else:
                        self.reply(201, {"ok": True, "call": n})
                elif path == "/slow":
                    time.sleep(3)
                    self.reply(200, {"slow": True, "call": n})
                elif path == "/stall":
                    # Headers and the start of a body, then nothing for 5 s.
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "100000")
                    self.end_headers()
                    self.wfile.write(b'{"start": "')
                    self.wfile.flush()
                    time.sleep(5)
                    self.wfile.write(b"x" * (100000 - 11))
                elif path == "/sleep":
                    # Sleeps the body's "seconds", then answers like /echo.
                    time.sleep(float(json.loads(body or b"{}").get("seconds", 1)))
                    self.reply(200, {"call": n, "key": key, "body": body.decode(errors="replace")})
                elif path == "/big":
                    # An answer of exactly the body's "bytes" bytes (x's and the call
                    # number), with the body's "status" (200 unless it says).
                    asked = json.loads(body or b"{}")
                    size = int(asked.get("bytes", 1000))
                    pad = "x" * max(0, size - len(json.dumps({"call": n, "pad": ""})))
                    self.reply(int(asked.get("status", 200)), {"call": n, "pad": pad})
                elif path == "/bodiless":
                    # The body's "status" (204 unless it says) with no body at all:
                    # a status that may not carry one (204, 205, 304).
                    asked = json.loads(body or b"{}")
                    self.send_response(int(asked.get("status", 204)))
                    self.send_header("x-origin-call", str(n))
                    self.end_headers()
                elif path == "/slowish":
                    # A function that takes a while and whose every run answers
                    # differently (call number and a nonce): a second run for the
                    # same request shows up as a changed answer.
                    nonce = uuid.uuid4().hex
                    with origin.lock:
                        origin.slowish_calls.append((time.time(), key, body, nonce))
                    time.sleep(0.3 + (n % 5) * 0.05)
                    self.reply(200, {"call": n, "nonce": nonce, "body": body.decode(errors="replace")})
                elif path in ("/process-document", "/start-training", "/generate-training-data"):
                    # FineFlow's three edge functions: each run answers with a new job id.
                    self.reply(200, {"function": path[1:], "job_id": f"job-{n}", "call": n,
                                     "body": body.decode(errors="replace")})
                elif path == "/destination":
                    if origin.destination_status < 300 and not origin.destination_gives_reference:
                        self.reply(origin.destination_status, {"received": True})
                    elif origin.destination_status < 300:
                        self.reply(origin.destination_status, {"reference": f"ACC-{n}"})
                    else:
                        self.reply(origin.destination_status, {"error": "accounting system down"})
                elif path == "/destination/rollback":
                    self.reply(origin.rollback_status, {"rolled_back": origin.rollback_status < 300})
                elif path == "/trainer":
                    self.reply(origin.trainer_status, {"accepted": origin.trainer_status < 300})
                elif path == "/emissions":
                    # GreenLang-style calculation: 200 with the result for valid
                    # activity data, 422 for invalid data (a failed operation).
                    data = json.loads(body or b"{}")
                    liters = data.get("fuel_liters")
                    if isinstance(liters, (int, float)) and not isinstance(liters, bool) and liters >= 0:
                        self.reply(200, {"co2_kg": round(liters * 2.68, 3), "call": n,
                                         "execution_id": uuid.uuid4().hex})
                    else:
                        self.reply(422, {"error": "fuel_liters must be a non-negative number", "call": n})
                elif path == "/ledger":
                    # AccuBooks-style ledger posting: 201 with a new entry for a balanced
                    # transaction (debits == credits), 422 otherwise.
                    lines = json.loads(body or b"{}").get("lines", [])
                    debits = sum(l.get("debit", 0) for l in lines)
                    credits = sum(l.get("credit", 0) for l in lines)
                    if lines and debits == credits:
                        self.reply(201, {"entry_id": f"je-{uuid.uuid4().hex[:12]}", "call": n,
                                         "debits": debits, "credits": credits})
                    else:
                        self.reply(422, {"error": "unbalanced transaction", "call": n})
                else:
                    self.reply(404, {"error": "no such function"})

        self.server = Listener(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
