// The client against a real `wrangler dev` (workerd, local D1, the key's Durable
// Object), a counting origin function, and a TCP proxy that drops connections.
// Needs the built Worker (`./x build`); `./x test` builds it first.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import {
  IdemgateClient,
  InvalidKeyError,
  KeyInFlightError,
  KeyReusedError,
  NetworkError,
  NotFoundError,
  RetriesExhaustedError,
  ServiceUnavailableError,
  UnauthorizedError,
} from "../dist/index.js";
import { startOrigin } from "./support/origin.js";
import { startProxy } from "./support/proxy.js";
import { freePort, startServer, token } from "./support/server.js";

const ERR = "/errors/";
const DELAY = "x-idemgate-test-delay-ms";
const FAIL = "x-idemgate-test-fail";

let origin, server, proxy;

before(async () => {
  origin = await startOrigin();
  server = await startServer({ UPSTREAM_BASE_URL: origin.url, UPSTREAM_FUNCTIONS: "echo" });
  proxy = await startProxy(server.port);
});

after(async () => {
  await proxy?.stop();
  await server?.stop();
  await origin?.stop();
});

const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 12)}`;
const doc = (content = `Document ${randomUUID()}. Some words here.`) => ({
  filename: "note.txt",
  content_type: "text/plain",
  content,
});

/** A client for a new user, recording its retries and the key of every request it sends. */
function clientFor(sub, { baseUrl = server.url, fetch = globalThis.fetch, ...options } = {}) {
  const retries = [];
  const sent = [];
  const client = new IdemgateClient({
    baseUrl,
    token: token(sub),
    onRetry: (e) => retries.push(e),
    fetch: (url, init) => {
      sent.push(new Headers(init.headers).get("idempotency-key"));
      return fetch(url, init);
    },
    ...options,
  });
  return { client, retries, sent };
}

/** Resolves once the key's first request holds its lease (so the next one sees it in flight). */
async function untilProcessing(client, key, route) {
  for (let i = 0; i < 100; i++) {
    const state = await client
      .get(`/v1/idempotency/keys/${encodeURIComponent(key)}?route=${encodeURIComponent(route)}`)
      .catch((e) => (e instanceof NotFoundError ? undefined : Promise.reject(e)));
    if (state?.data?.state === "processing") return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`key ${key} never showed as processing`);
}

describe("against wrangler dev", () => {
  test("the first call executes and a call with the same key replays it", async () => {
    const { client } = clientFor(unique("alice"));
    const key = unique("upload");
    const body = doc();
    const first = await client.post("/v1/documents", body, { key });
    assert.equal(first.status, 201);
    assert.equal(first.replayed, false);
    assert.equal(first.key, key);
    assert.equal(first.headers.get("idempotency-key"), key);
    const again = await client.post("/v1/documents", body, { key });
    assert.equal(again.status, 201);
    assert.equal(again.replayed, true);
    assert.equal(again.headers.get("x-idempotency-replay"), "true");
    assert.deepEqual(again.data, first.data);
    // The stored answer's expiry: ahead, and the same on the run and its replay.
    assert.ok(first.expiresAt instanceof Date, `Idempotency-Expires: ${first.headers.get("idempotency-expires")}`);
    assert.equal(again.expiresAt.getTime(), first.expiresAt.getTime());
    assert.ok(first.expiresAt.getTime() > Date.now() + 60_000, `${first.expiresAt.toISOString()}`);
    // Each attempt has its own request id.
    assert.match(first.requestId, /\S/);
    assert.match(again.requestId, /\S/);
    assert.notEqual(again.requestId, first.requestId);
  });

  test("an error answer carries its request id", async () => {
    const { client, retries } = clientFor(unique("alice"));
    const key = unique("k-ids");
    await client.post("/v1/documents", doc(), { key });
    const e = await client.post("/v1/documents", doc(), { key }).catch((x) => x);
    assert.ok(e instanceof KeyReusedError, `${e}`);
    assert.match(e.requestId, /\S/);
    assert.equal(retries.length, 0);
  });

  test("a generated key is a UUID that the server echoes", async () => {
    const { client, sent } = clientFor(unique("alice"));
    const r = await client.post("/v1/documents", doc());
    assert.equal(r.status, 201);
    assert.match(r.key, /^[0-9a-f-]{36}$/);
    assert.deepEqual(sent, [r.key]);
    assert.equal(r.headers.get("idempotency-key"), r.key);
  });

  test("a retry after a dropped connection reuses the key and replays the one run", async () => {
    const { client, retries, sent } = clientFor(unique("fn"), { baseUrl: proxy.url });
    const before = origin.count("/echo");
    const droppedBefore = proxy.dropped;
    proxy.dropNextAnswers(1);
    const r = await client.post("/functions/v1/echo", { order: unique("o"), amount: 10 });
    assert.equal(proxy.dropped, droppedBefore + 1, "the first answer was dropped");
    assert.ok(retries[0].error instanceof NetworkError, `${retries[0]?.error}`);
    assert.ok(r.attempts >= 2);
    assert.deepEqual(new Set(sent), new Set([r.key]), "every attempt sent the same key");
    assert.equal(r.status, 200);
    assert.equal(r.replayed, true, "the retry got the stored answer");
    assert.equal(origin.count("/echo"), before + 1, "the origin ran once");
    assert.equal(r.data.call, before + 1);
  });

  test("a call while the key's first request runs gets 409, waits Retry-After, then the replay", async () => {
    const sub = unique("alice");
    const { client } = clientFor(sub);
    const waiter = clientFor(sub);
    const key = unique("k-409");
    const body = doc();
    const first = client.post("/v1/documents", body, { key, headers: { [DELAY]: "2500" } });
    await untilProcessing(client, key, "/v1/documents");
    const second = await waiter.client.post("/v1/documents", body, { key });
    const firstAnswer = await first;
    assert.ok(waiter.retries[0].error instanceof KeyInFlightError, `${waiter.retries[0]?.error}`);
    assert.equal(waiter.retries[0].error.retryAfterMs, 1000);
    assert.ok(waiter.retries[0].delayMs >= 1000);
    assert.ok(second.attempts >= 2);
    assert.equal(firstAnswer.replayed, false);
    assert.equal(second.replayed, true);
    assert.deepEqual(second.data, firstAnswer.data);
  });

  test("with Prefer: wait the call gets the first run's answer in one attempt", async () => {
    const sub = unique("alice");
    const { client } = clientFor(sub);
    const waiter = clientFor(sub);
    const key = unique("k-wait");
    const body = doc();
    const first = client.post("/v1/documents", body, { key, headers: { [DELAY]: "1500" } });
    await untilProcessing(client, key, "/v1/documents");
    const second = await waiter.client.post("/v1/documents", body, { key, wait: 10 });
    assert.equal(second.attempts, 1);
    assert.equal(second.replayed, true);
    assert.equal(second.preferenceApplied, "wait=10");
    assert.deepEqual(second.data, (await first).data);
  });

  test("the same key with another payload is a KeyReusedError, not retried", async () => {
    const { client, sent } = clientFor(unique("alice"));
    const key = unique("k-reuse");
    await client.post("/v1/documents", doc("one text"), { key });
    const e = await client.post("/v1/documents", doc("another text"), { key }).catch((x) => x);
    assert.ok(e instanceof KeyReusedError, `${e}`);
    assert.equal(e.status, 422);
    assert.equal(e.type, `${ERR}idempotency-key-reused`);
    assert.equal(e.title, "Idempotency key reused");
    // The type leads to its description, titled as the problem.
    assert.equal(e.typeUrl, `${server.url}/errors/idempotency-key-reused`);
    const page = await fetch(e.typeUrl);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<h1>Idempotency key reused<\/h1>/);
    assert.match(e.detail, /different request payload/);
    assert.equal(e.problem.idempotency_key, key);
    assert.equal(e.key, key);
    assert.equal(e.attempts, 1);
    assert.equal(sent.length, 2);
  });

  test("a 503 from storage is retried after its Retry-After with the same key, and runs then", async () => {
    let attempt = 0;
    const slept = [];
    // The server's test hook fails the first attempt's commit; the retry goes through.
    const failFirst = (url, init) => {
      const headers = new Headers(init.headers);
      if (attempt++ === 0) headers.set(FAIL, "storage");
      return globalThis.fetch(url, { ...init, headers });
    };
    const { client, retries, sent } = clientFor(unique("alice"), {
      fetch: failFirst,
      sleep: (ms) => (slept.push(ms), new Promise((r) => setTimeout(r, ms))),
    });
    const started = Date.now();
    const r = await client.post("/v1/documents", doc());
    assert.ok(retries[0].error instanceof ServiceUnavailableError, `${retries[0]?.error}`);
    assert.equal(retries[0].error.type, `${ERR}storage-unavailable`);
    assert.equal(retries[0].error.retryAfterMs, 5000);
    assert.ok(slept[0] >= 5000 && Date.now() - started >= 5000);
    assert.equal(r.status, 201);
    assert.equal(r.replayed, false, "nothing was stored by the failed attempt");
    assert.equal(r.attempts, 2);
    assert.deepEqual(sent, [r.key, r.key]);
    // Each attempt has its own request id: the failed one's is on its error.
    assert.match(retries[0].error.requestId, /\S/);
    assert.match(r.requestId, /\S/);
    assert.notEqual(r.requestId, retries[0].error.requestId);
    assert.ok(r.expiresAt instanceof Date);
    const stored = await client.get(`/v1/documents/${r.data.id}`);
    assert.equal(stored.data.id, r.data.id);
  });

  test("storage down past the deadline gives up at once, and the key runs later", async () => {
    const { client } = clientFor(unique("alice"), { retry: { deadlineMs: 3000 } });
    const key = unique("k-down");
    const body = doc();
    const started = Date.now();
    const e = await client.post("/v1/documents", body, { key, headers: { [FAIL]: "storage" } }).catch((x) => x);
    assert.ok(e instanceof RetriesExhaustedError, `${e}`);
    assert.equal(e.reason, "deadline");
    assert.equal(e.attempts, 1);
    assert.equal(e.key, key);
    assert.ok(e.cause instanceof ServiceUnavailableError);
    assert.ok(Date.now() - started < 3000);
    const later = await client.post("/v1/documents", body, { key });
    assert.equal(later.status, 201);
    assert.equal(later.replayed, false);
  });

  test("a key in flight past the deadline gives up within it, with the key to call again", async () => {
    const sub = unique("alice");
    const { client } = clientFor(sub);
    const impatient = clientFor(sub, { retry: { deadlineMs: 2500 } });
    const key = unique("k-slow");
    const body = doc();
    const first = client.post("/v1/documents", body, { key, headers: { [DELAY]: "6000" } });
    await untilProcessing(client, key, "/v1/documents");
    const started = Date.now();
    const e = await impatient.client.post("/v1/documents", body, { key }).catch((x) => x);
    const elapsed = Date.now() - started;
    assert.ok(e instanceof RetriesExhaustedError, `${e}`);
    assert.equal(e.reason, "deadline");
    assert.ok(e.cause instanceof KeyInFlightError);
    assert.ok(e.attempts >= 2);
    // The last attempt is cut at the deadline at the latest; allow the scheduler a little.
    assert.ok(elapsed < 2500 + 500, `${elapsed}`);
    const firstAnswer = await first;
    const again = await impatient.client.post("/v1/documents", body, { key: e.key });
    assert.equal(again.replayed, true);
    assert.deepEqual(again.data, firstAnswer.data);
  });

  test("a server that is not there is given up on within the deadline", async () => {
    const port = await freePort();
    const { client, sent } = clientFor(unique("alice"), {
      baseUrl: `http://127.0.0.1:${port}`,
      retry: { deadlineMs: 1500, baseDelayMs: 50 },
    });
    const started = Date.now();
    const e = await client.post("/v1/documents", doc()).catch((x) => x);
    assert.ok(e instanceof RetriesExhaustedError, `${e}`);
    assert.ok(e.cause instanceof NetworkError);
    assert.ok(e.attempts >= 2);
    assert.equal(new Set(sent).size, 1);
    assert.ok(Date.now() - started < 1500 + 500);
  });

  test("a finished key is released with DELETE, and the next call with it runs again", async () => {
    const { client } = clientFor(unique("alice"));
    const key = unique("k-release");
    const body = doc();
    const first = await client.post("/v1/documents", body, { key });
    const released = await client.delete(`/v1/idempotency/keys/${key}?route=/v1/documents`);
    assert.equal(released.status, 204);
    assert.equal(released.data, undefined);
    const again = await client.post("/v1/documents", body, { key });
    assert.equal(again.status, 201);
    assert.equal(again.replayed, false);
    assert.equal(first.replayed, false);
  });

  test("4xx problems are typed errors and are not retried", async () => {
    const bad = new IdemgateClient({ baseUrl: server.url, token: "not-a-jwt" });
    const e401 = await bad.post("/v1/documents", doc()).catch((x) => x);
    assert.ok(e401 instanceof UnauthorizedError, `${e401}`);
    assert.equal(e401.attempts, 1);

    const { client, sent } = clientFor(unique("alice"));
    const e400 = await client.post("/v1/documents", doc(), { key: "has space" }).catch((x) => x);
    assert.ok(e400 instanceof InvalidKeyError, `${e400}`);
    assert.equal(e400.type, `${ERR}invalid-idempotency-key`);
    assert.equal(sent.length, 1);

    const e404 = await client.get("/v1/documents/doc_nope").catch((x) => x);
    assert.ok(e404 instanceof NotFoundError, `${e404}`);
    assert.equal(e404.attempts, 1);
  });
});
