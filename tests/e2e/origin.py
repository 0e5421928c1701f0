"""A small origin function and trainer server on 127.0.0.1 that counts the calls
it receives (started in-process by the tests)."""

import json
import threading
import time
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Listener(ThreadingHTTPServer):
    # socketserver's default backlog is 5: sixteen concurrent calls from the
    # Worker overflowed it (the kernel's ListenOverflows counter rose during
    # test_record_batching's 1 000 calls at 16 connections), and on a loaded
    # machine a dropped connection became a 502 from an origin that was up.
    request_queue_size = 128


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
        self.server = None
        self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def count(self, path):
        with self.lock:
            return self.calls[path]

    def start(self, port=0):
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, body, headers=()):
                data = json.dumps(body).encode()
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
                path = self.path
                with origin.lock:
                    origin.calls[path] += 1
                    n = origin.calls[path]
                    origin.requests[path].append(({k.lower(): v for k, v in self.headers.items()}, body))
                key = self.headers.get("idempotency-key")
                if path == "/echo":
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
