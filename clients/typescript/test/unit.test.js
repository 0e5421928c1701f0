// The client against a scripted fake fetch, a hand-moved clock and a recording
// sleep: retry decisions, backoff bounds and Retry-After parsing, with no server.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  DEFAULT_RETRY_POLICY,
  IdemgateClient,
  InvalidKeyError,
  InvalidTransitionError,
  KeyReusedError,
  NetworkError,
  NotFoundError,
  ProblemError,
  RateLimitedError,
  RetriesExhaustedError,
  ServerError,
  ServiceUnavailableError,
  UnauthorizedError,
  UnprocessableError,
  backoffDelayMs,
  parseHttpDate,
  parseRetryAfter,
  retryAfterDelayMs,
} from "../dist/index.js";

const ERR = "/errors/";
const T0 = Date.UTC(2026, 10, 27, 12, 0, 0);

function problem(status, slug, extra = {}, headers = {}) {
  const body = { type: ERR + slug, title: slug.replace(/-/g, " "), status, detail: `detail of ${slug}`, ...extra };
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", ...headers },
  });
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

/**
 * A client whose fetch answers from `script` in order (a Response, an Error to
 * throw, or a function of the request), whose clock starts at T0 and moves only
 * when it sleeps, and whose jitter is `random`.
 */
function harness(script, { retry, random = () => 0.5, token = "tok", ...rest } = {}) {
  const calls = [];
  const sleeps = [];
  const retries = [];
  let now = T0;
  const client = new IdemgateClient({
    baseUrl: "https://idemgate.test/",
    token,
    retry,
    random,
    now: () => now,
    sleep: async (ms, signal) => {
      signal?.throwIfAborted();
      sleeps.push(ms);
      now += ms;
    },
    onRetry: (e) => retries.push(e),
    fetch: async (url, init) => {
      const headers = new Headers(init.headers);
      calls.push({ url, method: init.method, headers, body: init.body, signal: init.signal });
      const next = script.shift();
      if (next === undefined) throw new Error("the script ran out");
      const step = typeof next === "function" ? await next(init) : next;
      if (step instanceof Error) throw step;
      return step;
    },
    ...rest,
  });
  return { client, calls, sleeps, retries, clock: { get now() { return now; }, advance: (ms) => (now += ms) } };
}

const dropped = () => new TypeError("fetch failed", { cause: new Error("other side closed") });

describe("Retry-After parsing", () => {
  test("delay-seconds are read as whole seconds", () => {
    assert.equal(parseRetryAfter("5", T0), 5000);
    assert.equal(parseRetryAfter(" 0 ", T0), 0);
    assert.equal(parseRetryAfter("120", T0), 120_000);
  });

  test("an IMF-fixdate is the time left until it, and a past date is no wait", () => {
    assert.equal(parseRetryAfter("Fri, 27 Nov 2026 12:00:07 GMT", T0), 7000);
    assert.equal(parseRetryAfter("Fri, 27 Nov 2026 11:59:00 GMT", T0), 0);
  });

  test("the obsolete RFC 850 and asctime forms are accepted", () => {
    const at = Date.UTC(1994, 10, 6, 8, 49, 37);
    assert.equal(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT", T0), at);
    assert.equal(parseHttpDate("Sun Nov  6 08:49:37 1994", T0), at);
    assert.equal(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT", T0), at);
  });

  test("an RFC 850 two-digit year more than 50 years ahead is in the past century", () => {
    assert.equal(new Date(parseHttpDate("Monday, 01-Jan-30 00:00:00 GMT", T0)).getUTCFullYear(), 2030);
    assert.equal(new Date(parseHttpDate("Friday, 01-Jan-99 00:00:00 GMT", T0)).getUTCFullYear(), 1999);
  });

  test("malformed values are ignored rather than guessed", () => {
    for (const v of [undefined, null, "", "soon", "-1", "1.5", "+3", "5s", "0x10",
      "Fri, 27 Nov 2026 12:00:07", "Fri, 31 Feb 2026 12:00:07 GMT", "Fri, 27 Nov 2026 25:00:00 GMT",
      "27 Nov 2026 12:00:07 GMT", "2026-11-27T12:00:07Z"]) {
      assert.equal(parseRetryAfter(v, T0), undefined, `${v}`);
    }
  });

  test("an absurdly large delay stays a finite number", () => {
    const ms = parseRetryAfter("9".repeat(40), T0);
    assert.ok(Number.isFinite(ms) && ms > 10 ** 12);
  });
});

describe("backoff", () => {
  const policy = { baseDelayMs: 100, maxDelayMs: 1000 };

  test("the ceiling doubles per retry up to the maximum", () => {
    const top = () => 1;
    assert.deepEqual([1, 2, 3, 4, 5, 6, 50].map((r) => backoffDelayMs(r, policy, top)), [100, 200, 400, 800, 1000, 1000, 1000]);
  });

  test("full jitter spreads the wait over [0, ceiling] and never leaves it", () => {
    assert.equal(backoffDelayMs(3, policy, () => 0), 0);
    assert.equal(backoffDelayMs(3, policy, () => 0.5), 200);
    for (let i = 0; i < 1000; i++) {
      const d = backoffDelayMs(1 + (i % 12), policy, Math.random);
      assert.ok(d >= 0 && d <= 1000, `${d}`);
    }
    assert.equal(backoffDelayMs(2, policy, () => NaN), 0);
    assert.equal(backoffDelayMs(2, policy, () => 7), 200);
  });

  test("a server-named wait is never shortened and only slightly spread", () => {
    for (const r of [0, 0.3, 0.999, 1]) {
      const d = retryAfterDelayMs(1000, { baseDelayMs: 250 }, () => r);
      assert.ok(d >= 1000 && d <= 1100, `${d}`);
    }
    assert.equal(retryAfterDelayMs(0, { baseDelayMs: 250 }, () => 1), 0);
    assert.ok(retryAfterDelayMs(60_000, { baseDelayMs: 250 }, () => 1) <= 60_250);
  });
});

describe("keys", () => {
  test("one generated UUID key is sent on every attempt of an operation", async () => {
    const h = harness([dropped(), problem(503, "storage-unavailable"), json(201, { id: "doc_1" })]);
    const r = await h.client.post("/v1/documents", { a: 1 });
    const keys = h.calls.map((c) => c.headers.get("idempotency-key"));
    assert.match(keys[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(keys, [keys[0], keys[0], keys[0]]);
    assert.equal(r.key, keys[0]);
    assert.equal(r.attempts, 3);
    assert.deepEqual(r.data, { id: "doc_1" });
  });

  test("every attempt sends the same body bytes", async () => {
    const h = harness([dropped(), json(200, {})]);
    await h.client.post("/x", { b: [1, 2], a: "é" });
    assert.equal(h.calls[0].body, h.calls[1].body);
    assert.equal(h.calls[0].headers.get("content-type"), "application/json");
  });

  test("two operations get two keys", async () => {
    const h = harness([json(201, {}), json(201, {})]);
    const a = await h.client.post("/v1/documents", { a: 1 });
    const b = await h.client.post("/v1/documents", { a: 1 });
    assert.notEqual(a.key, b.key);
  });

  test("the caller's own key is used as given", async () => {
    const h = harness([dropped(), json(201, {})]);
    const r = await h.client.post("/v1/documents", {}, { key: "order-77" });
    assert.deepEqual(h.calls.map((c) => c.headers.get("idempotency-key")), ["order-77", "order-77"]);
    assert.equal(r.key, "order-77");
  });

  test("key: false sends no key, reports the one the server derived, and never retries the write", async () => {
    const h = harness([json(201, {}, { "idempotency-key": "derived:abc" })]);
    const r = await h.client.post("/v1/documents", {}, { key: false });
    assert.equal(h.calls[0].headers.get("idempotency-key"), null);
    assert.equal(r.key, "derived:abc");
    const h2 = harness([dropped(), json(201, {})]);
    await assert.rejects(h2.client.post("/v1/documents", {}, { key: false }), NetworkError);
    assert.equal(h2.calls.length, 1);
  });

  test("reads send no key and are retried", async () => {
    const h = harness([dropped(), json(200, { id: "doc_1" })]);
    const r = await h.client.get("/v1/documents/doc_1");
    assert.equal(h.calls[0].headers.get("idempotency-key"), null);
    assert.equal(h.calls[0].method, "GET");
    assert.equal(r.attempts, 2);
    assert.equal(r.key, undefined);
  });

  test("newKey gives a fresh key to store with the intent", () => {
    const { client } = harness([]);
    assert.notEqual(client.newKey(), client.newKey());
  });
});

describe("requests", () => {
  test("the token is sent as a Bearer, and a token function is asked on every attempt", async () => {
    let n = 0;
    const h = harness([dropped(), json(200, {})], { token: () => `t${++n}` });
    await h.client.post("/x", {});
    assert.deepEqual(h.calls.map((c) => c.headers.get("authorization")), ["Bearer t1", "Bearer t2"]);
  });

  test("a call's headers replace the client's whatever their case, and the client's own replace both", async () => {
    const h = harness([json(200, {})], { headers: { "Content-Type": "text/plain", "X-App": "a", Authorization: "Basic x" } });
    await h.client.request("POST", "/x", {
      key: "k",
      body: "a,b",
      headers: { "content-type": "text/csv", "x-app": "b", "Idempotency-Key": "other" },
    });
    const sent = h.calls[0].headers;
    assert.equal(sent.get("content-type"), "text/csv");
    assert.equal(sent.get("x-app"), "b");
    assert.equal(sent.get("authorization"), "Bearer tok");
    assert.equal(sent.get("idempotency-key"), "k");
    assert.equal(h.calls[0].body, "a,b");
  });

  test("a raw body defaults to octet-stream, and a read sends no body", async () => {
    const h = harness([json(200, {}), json(200, {})]);
    await h.client.request("POST", "/x", { body: new Uint8Array([1, 2]) });
    assert.equal(h.calls[0].headers.get("content-type"), "application/octet-stream");
    await h.client.request("GET", "/x", { json: { a: 1 } });
    assert.equal(h.calls[1].body, undefined);
    assert.equal(h.calls[1].headers.get("content-type"), null);
  });

  test("the base URL keeps its path prefix and loses a trailing slash", async () => {
    const h = harness([json(200, {}), json(200, {})], { baseUrl: "https://gw.test/idem/" });
    await h.client.get("/v1/documents/d");
    await h.client.get("v1/documents/e");
    assert.deepEqual(h.calls.map((c) => c.url), ["https://gw.test/idem/v1/documents/d", "https://gw.test/idem/v1/documents/e"]);
  });

  test("a base URL that does not parse fails at once and is not retried", async () => {
    const h = harness([], { baseUrl: "not a url" });
    await assert.rejects(h.client.post("/x", {}), TypeError);
    assert.equal(h.calls.length, 0);
  });

  test("Prefer: wait=N is sent when asked, never past the deadline, and not otherwise", async () => {
    const h = harness([json(200, {}), json(200, {}), json(200, {})], { retry: { deadlineMs: 4500 } });
    await h.client.post("/x", {}, { wait: 10 });
    await h.client.post("/x", {}, { wait: 2 });
    await h.client.post("/x", {});
    assert.deepEqual(h.calls.map((c) => c.headers.get("prefer")), ["wait=4", "wait=2", null]);
    const h2 = harness([json(200, {})], { retry: { attemptTimeoutMs: 3000 } });
    await h2.client.post("/x", {}, { wait: 10 });
    assert.equal(h2.calls[0].headers.get("prefer"), "wait=3", "nor past the attempt's own limit");
  });

  test("a replay is reported, by either header, with the applied preference", async () => {
    const h = harness([
      json(201, { id: 1 }, { "idempotent-replayed": "true", "preference-applied": "wait=10" }),
      json(201, { id: 1 }, { "x-idempotency-replay": "true" }),
      json(201, { id: 1 }),
    ]);
    const a = await h.client.post("/x", {}, { wait: 10 });
    assert.equal(a.replayed, true);
    assert.equal(a.preferenceApplied, "wait=10");
    assert.equal((await h.client.post("/x", {})).replayed, true);
    const c = await h.client.post("/x", {});
    assert.equal(c.replayed, false);
    assert.equal(c.preferenceApplied, undefined);
  });

  test("non-JSON answers come back as text and an empty one as undefined", async () => {
    const h = harness([
      new Response("a,b\n1,2\n", { status: 200, headers: { "content-type": "text/csv" } }),
      new Response('{"a":1}\n{"a":2}\n', { status: 200, headers: { "content-type": "application/x-ndjson" } }),
      new Response(null, { status: 204 }),
    ]);
    assert.equal((await h.client.get("/f")).data, "a,b\n1,2\n");
    assert.equal((await h.client.get("/j")).data, '{"a":1}\n{"a":2}\n');
    assert.equal((await h.client.delete("/k")).data, undefined);
  });
});

describe("request ids and expiry", () => {
  const EXPIRES = "Sat, 28 Nov 2026 12:00:00 GMT";

  test("a result carries the answering attempt's X-Request-Id and Idempotency-Expires as a Date", async () => {
    const h = harness([
      problem(503, "storage-unavailable", {}, { "x-request-id": "req-1", "retry-after": "1" }),
      json(201, { id: "doc_1" }, { "x-request-id": "req-2", "idempotency-expires": EXPIRES }),
    ]);
    const r = await h.client.post("/v1/documents", {});
    assert.equal(r.requestId, "req-2");
    assert.ok(r.expiresAt instanceof Date);
    assert.equal(r.expiresAt.getTime(), Date.UTC(2026, 10, 28, 12, 0, 0));
    assert.equal(h.retries[0].error.requestId, "req-1", "the failed attempt's error has its own id");
  });

  test("a first run and its replay state the same expiry", async () => {
    const h = harness([
      json(201, { id: 1 }, { "x-request-id": "a", "idempotency-expires": EXPIRES }),
      json(201, { id: 1 }, { "x-request-id": "b", "idempotency-expires": EXPIRES, "idempotent-replayed": "true" }),
    ]);
    const first = await h.client.post("/x", {}, { key: "k" });
    const again = await h.client.post("/x", {}, { key: "k" });
    assert.equal(again.expiresAt.getTime(), first.expiresAt.getTime());
    assert.notEqual(again.requestId, first.requestId);
  });

  test("without the headers, or with an expiry that is not an HTTP-date, both are undefined", async () => {
    const h = harness([
      json(200, {}),
      json(200, {}, { "idempotency-expires": "2026-11-28T12:00:00Z" }),
      json(200, {}, { "idempotency-expires": "tomorrow" }),
      json(200, {}, { "idempotency-expires": "Mon, 31 Feb 2026 12:00:00 GMT" }),
    ]);
    for (let i = 0; i < 4; i++) {
      const r = await h.client.get("/x");
      assert.equal(r.requestId, undefined);
      assert.equal(r.expiresAt, undefined, `answer ${i}`);
    }
  });

  test("an error answer carries its request id and, when stored, its expiry", async () => {
    const h = harness([
      problem(422, "idempotency-key-reused", {}, { "x-request-id": "req-422", "idempotency-expires": EXPIRES }),
      problem(404, "not-found", {}, { "x-request-id": "req-404" }),
    ]);
    const reused = await h.client.post("/x", {}).catch((x) => x);
    assert.ok(reused instanceof KeyReusedError);
    assert.equal(reused.requestId, "req-422");
    assert.equal(reused.expiresAt.getTime(), Date.UTC(2026, 10, 28, 12, 0, 0));
    const missing = await h.client.get("/x").catch((x) => x);
    assert.ok(missing instanceof NotFoundError);
    assert.equal(missing.requestId, "req-404");
    assert.equal(missing.expiresAt, undefined);
  });

  test("giving up carries the last answer's request id; no answer has none", async () => {
    const h = harness([
      problem(503, "storage-unavailable", {}, { "x-request-id": "r1", "retry-after": "1" }),
      problem(503, "storage-unavailable", {}, { "x-request-id": "r2", "retry-after": "1" }),
    ], { retry: { maxAttempts: 2 } });
    const e = await h.client.post("/x", {}).catch((x) => x);
    assert.ok(e instanceof RetriesExhaustedError);
    assert.equal(e.requestId, "r2");
    assert.equal(e.cause.requestId, "r2");
    const h2 = harness([dropped(), dropped()], { retry: { maxAttempts: 2 } });
    const e2 = await h2.client.post("/x", {}).catch((x) => x);
    assert.ok(e2 instanceof RetriesExhaustedError && e2.cause instanceof NetworkError);
    assert.equal(e2.requestId, undefined);
    assert.equal(e2.cause.requestId, undefined);
  });
});

describe("what is retried", () => {
  test("409 in flight waits the server's Retry-After, then gets the answer", async () => {
    const h = harness([
      problem(409, "idempotency-key-in-flight", { idempotency_key: "k" }, { "retry-after": "1" }),
      json(201, { id: 1 }, { "idempotent-replayed": "true" }),
    ]);
    const r = await h.client.post("/x", {}, { key: "k" });
    assert.equal(h.sleeps.length, 1);
    assert.ok(h.sleeps[0] >= 1000 && h.sleeps[0] <= 1100, `${h.sleeps[0]}`);
    assert.equal(r.replayed, true);
    assert.equal(r.attempts, 2);
    assert.equal(h.retries[0].error.status, 409);
    assert.equal(h.retries[0].attempt, 1);
  });

  test("503 with an HTTP-date Retry-After waits until that date", async () => {
    const h = harness([
      problem(503, "storage-unavailable", {}, { "retry-after": new Date(T0 + 7000).toUTCString() }),
      json(201, {}),
    ]);
    await h.client.post("/x", {});
    assert.ok(h.sleeps[0] >= 7000 && h.sleeps[0] <= 7250, `${h.sleeps[0]}`);
  });

  test("a 503 without Retry-After (a proxy's page) backs off and retries", async () => {
    const h = harness([
      new Response("Your worker restarted mid-request", { status: 503, headers: { "content-type": "text/plain" } }),
      json(201, {}),
    ]);
    const r = await h.client.post("/x", {});
    assert.equal(r.attempts, 2);
    assert.equal(h.sleeps[0], backoffDelayMs(1, DEFAULT_RETRY_POLICY, () => 0.5));
  });

  test("502 and 504 (nothing stored, key released) are retried", async () => {
    const h = harness([problem(502, "upstream-unreachable"), problem(504, "upstream-timeout"), json(200, {})]);
    assert.equal((await h.client.post("/functions/v1/f", {})).attempts, 3);
  });

  test("network errors back off with growing, jittered, bounded waits", async () => {
    const h = harness(Array.from({ length: 7 }, dropped).concat([json(200, {})]), {
      random: () => 0.999,
      retry: { baseDelayMs: 100, maxDelayMs: 1000, maxAttempts: 8 },
    });
    const r = await h.client.post("/x", {});
    assert.equal(r.attempts, 8);
    assert.deepEqual(h.sleeps, [99, 199, 399, 799, 999, 999, 999]);
    assert.ok(h.retries.every((e) => e.error instanceof NetworkError));
  });

  test("429 is retried only when the server says when", async () => {
    const h = harness([problem(429, "too-many", {}, { "retry-after": "2" }), json(200, {})]);
    assert.equal((await h.client.post("/x", {})).attempts, 2);
    assert.ok(h.sleeps[0] >= 2000);
    const h2 = harness([problem(429, "too-many")]);
    await assert.rejects(h2.client.post("/x", {}), RateLimitedError);
    assert.equal(h2.calls.length, 1);
  });

  test("an attempt that hangs is cut by the attempt timeout and retried", async () => {
    const hang = (init) => new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(init.signal.reason)));
    const h = harness([hang, json(200, { ok: true })], { retry: { attemptTimeoutMs: 20 } });
    const r = await h.client.post("/x", {});
    assert.equal(r.attempts, 2);
    assert.equal(h.retries[0].error.timedOut, true);
  });
});

describe("what is final", () => {
  test("422 key reused is a KeyReusedError with the problem's fields, not retried", async () => {
    const h = harness([problem(422, "idempotency-key-reused", { idempotency_key: "k-1" })]);
    const e = await h.client.post("/x", { other: true }, { key: "k-1" }).catch((x) => x);
    assert.ok(e instanceof KeyReusedError && e instanceof UnprocessableError && e instanceof ProblemError);
    assert.equal(e.status, 422);
    assert.equal(e.type, ERR + "idempotency-key-reused");
    assert.equal(e.slug, "idempotency-key-reused");
    assert.equal(e.typeUrl, "https://idemgate.test/errors/idempotency-key-reused");
    assert.equal(e.title, "idempotency key reused");
    assert.equal(e.detail, "detail of idempotency-key-reused");
    assert.equal(e.problem.idempotency_key, "k-1");
    assert.equal(e.key, "k-1");
    assert.equal(e.attempts, 1);
    assert.equal(h.calls.length, 1);
    assert.equal(h.sleeps.length, 0);
  });

  test("4xx answers are typed errors and never retried", async () => {
    const cases = [
      [problem(400, "invalid-idempotency-key"), InvalidKeyError],
      [problem(401, "unauthorized"), UnauthorizedError],
      [problem(404, "not-found"), NotFoundError],
      [problem(409, "invalid-transition", { current_state: "posted" }), InvalidTransitionError],
      [problem(413, "payload-too-large"), ProblemError],
      [problem(422, "quality-too-low"), UnprocessableError],
    ];
    for (const [answer, Class] of cases) {
      const h = harness([answer]);
      const e = await h.client.post("/x", {}).catch((x) => x);
      assert.ok(e instanceof Class, `${answer.status}: ${e}`);
      assert.equal(h.calls.length, 1);
    }
    const h = harness([problem(409, "invalid-transition", { current_state: "posted" })]);
    assert.equal((await h.client.put("/x", {}).catch((x) => x)).currentState, "posted");
  });

  test("a slug with the wrong status is typed by its status", async () => {
    const h = harness([problem(400, "idempotency-key-reused")]);
    const e = await h.client.post("/x", {}).catch((x) => x);
    assert.equal(e.constructor.name, "BadRequestError");
  });

  test("an origin's own JSON 4xx is an error with its body and about:blank type", async () => {
    const h = harness([json(422, { error: "invalid order" }, { "idempotent-replayed": "true" })]);
    const e = await h.client.post("/functions/v1/reject", {}).catch((x) => x);
    assert.ok(e instanceof UnprocessableError && !(e instanceof KeyReusedError));
    assert.equal(e.type, "about:blank");
    assert.equal(e.typeUrl, "about:blank");
    assert.equal(e.slug, undefined);
    assert.equal(e.title, "Unprocessable Content");
    assert.deepEqual(e.body, { error: "invalid order" });
    assert.equal(e.problem, undefined);
    assert.equal(e.replayed, true);
  });

  test("500 (the handler failed) is not retried by default, and is when listed", async () => {
    const h = harness([problem(500, "internal")]);
    await assert.rejects(h.client.post("/x", {}), ServerError);
    assert.equal(h.calls.length, 1);
    const h2 = harness([problem(500, "internal"), json(201, {})], { retry: { retryStatuses: [500] } });
    assert.equal((await h2.client.post("/x", {})).attempts, 2);
  });

  test("a replayed error answer is stored and final, even a 502", async () => {
    const h = harness([problem(502, "answer-too-large", {}, { "idempotent-replayed": "true" })]);
    const e = await h.client.post("/x", {}).catch((x) => x);
    assert.ok(e instanceof ServerError && e.replayed);
    assert.equal(h.calls.length, 1);
  });
});

describe("giving up", () => {
  test("after maxAttempts the client gives up with the last failure as cause", async () => {
    const h = harness(Array.from({ length: 3 }, () => problem(503, "storage-unavailable", {}, { "retry-after": "1" })), {
      retry: { maxAttempts: 3 },
    });
    const e = await h.client.post("/x", {}, { key: "k-give-up" }).catch((x) => x);
    assert.ok(e instanceof RetriesExhaustedError, `${e}`);
    assert.equal(e.reason, "max-attempts");
    assert.equal(e.attempts, 3);
    assert.equal(e.key, "k-give-up");
    assert.ok(e.cause instanceof ServiceUnavailableError);
    assert.equal(h.calls.length, 3);
  });

  test("the total deadline bounds the waits, however many attempts are allowed", async () => {
    const h = harness(Array.from({ length: 100 }, dropped), {
      random: () => 1,
      retry: { deadlineMs: 5000, maxAttempts: 100, baseDelayMs: 200, maxDelayMs: 2000 },
    });
    const e = await h.client.post("/x", {}).catch((x) => x);
    assert.ok(e instanceof RetriesExhaustedError);
    assert.equal(e.reason, "deadline");
    assert.ok(e.cause instanceof NetworkError);
    assert.ok(h.clock.now - T0 < 5000, `${h.clock.now - T0}`);
    assert.ok(e.elapsedMs < 5000);
    assert.ok(h.calls.length >= 4 && h.calls.length < 10, `${h.calls.length}`);
  });

  test("a Retry-After beyond the deadline gives up at once instead of sleeping", async () => {
    const h = harness([problem(503, "storage-unavailable", {}, { "retry-after": "5" })], { retry: { deadlineMs: 3000 } });
    const e = await h.client.post("/x", {}).catch((x) => x);
    assert.ok(e instanceof RetriesExhaustedError);
    assert.equal(e.reason, "deadline");
    assert.equal(e.cause.retryAfterMs, 5000);
    assert.deepEqual(h.sleeps, []);
  });

  test("maxAttempts 1 turns retries off and throws the failure itself", async () => {
    const h = harness([problem(503, "storage-unavailable")], { retry: { maxAttempts: 1 } });
    await assert.rejects(h.client.post("/x", {}), ServiceUnavailableError);
  });

  test("the caller's abort ends the operation during a wait, with no further attempt", async () => {
    const controller = new AbortController();
    const h = harness([dropped(), json(200, {})], {
      sleep: async (ms, signal) => {
        controller.abort();
        signal.throwIfAborted();
      },
    });
    await assert.rejects(h.client.post("/x", {}, { signal: controller.signal }), { name: "AbortError" });
    assert.equal(h.calls.length, 1);
  });

  test("the caller's abort during an attempt is not taken for a network error", async () => {
    const controller = new AbortController();
    const hang = (init) =>
      new Promise((_, reject) => {
        init.signal.addEventListener("abort", () => reject(init.signal.reason));
        controller.abort();
      });
    const h = harness([hang, json(200, {})]);
    await assert.rejects(h.client.post("/x", {}, { signal: controller.signal }), { name: "AbortError" });
    assert.equal(h.calls.length, 1);
  });
});
