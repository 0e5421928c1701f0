// The same-platform peer for `./x bench`: hono 4.13.19 with hono-idempotency 0.9.1
// (vendored, unmodified, under vendor/ with its LICENSE), built as its README shows:
// - its Durable Object store: one object per key (`idFromName`), the store inside
//   the object (`durableObjectStore({ storage: ctx.storage })`), its methods
//   reached by RPC;
// - its D1 store: `d1Store({ database })` on a D1 binding.
// Both front the bench's origin, as idemgate does; `/plain/echo` is the same route
// without the middleware. Benchmark only: never part of idemgate's Worker.
import { DurableObject } from "cloudflare:workers";
import { Hono } from "hono";
import { idempotency } from "./vendor/hono-idempotency/src/index.ts";
import { d1Store } from "./vendor/hono-idempotency/src/stores/cloudflare-d1.ts";
import { durableObjectStore } from "./vendor/hono-idempotency/src/stores/durable-objects.ts";
import type { IdempotencyStore } from "./vendor/hono-idempotency/src/stores/types.ts";
import type { IdempotencyRecord, StoredResponse } from "./vendor/hono-idempotency/src/types.ts";

type Env = { IDEMPOTENCY_DO: DurableObjectNamespace<IdempotencyDO>; IDEMPOTENCY_DB: D1Database; UPSTREAM_URL: string };

export class IdempotencyDO extends DurableObject<Env> {
  private store: IdempotencyStore;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.store = durableObjectStore({ storage: ctx.storage, ttl: 24 * 60 * 60 * 1000 });
  }

  get(key: string) {
    return this.store.get(key);
  }
  lock(key: string, record: IdempotencyRecord) {
    return this.store.lock(key, record);
  }
  complete(key: string, response: StoredResponse) {
    return this.store.complete(key, response);
  }
  delete(key: string) {
    return this.store.delete(key);
  }
  purge() {
    return this.store.purge();
  }
}

/** The store the middleware sees: each call goes to the key's own object. */
function perKeyObjectStore(ns: Env["IDEMPOTENCY_DO"]): IdempotencyStore {
  const stub = (key: string) => ns.get(ns.idFromName(key));
  return {
    get: (key) => stub(key).get(key),
    lock: (key, record) => stub(key).lock(key, record),
    complete: (key, response) => stub(key).complete(key, response),
    delete: (key) => stub(key).delete(key),
    purge: async () => 0, // per-key objects: nothing to sweep from the Worker
  };
}

async function origin(c: { req: { raw: Request; arrayBuffer(): Promise<ArrayBuffer> }; env: Env }) {
  // Hono's cached body: the middleware has read it already for the fingerprint.
  const body = await c.req.arrayBuffer();
  const answer = await fetch(c.env.UPSTREAM_URL, {
    method: "POST",
    body,
    headers: { "content-type": c.req.raw.headers.get("content-type") ?? "application/json" },
  });
  return new Response(answer.body, { status: answer.status, headers: answer.headers });
}

const app = new Hono<{ Bindings: Env }>();
// One tenant, as in idemgate's bench (its README's advice against global keys).
const cacheKeyPrefix = "bench";

app.get("/healthz", (c) => c.text("ok"));
app.post("/plain/echo", (c) => origin(c));
app.post(
  "/do/echo",
  (c, next) => idempotency({ store: perKeyObjectStore(c.env.IDEMPOTENCY_DO), cacheKeyPrefix })(c, next),
  (c) => origin(c),
);
app.post(
  "/d1/echo",
  (c, next) => idempotency({ store: d1Store({ database: c.env.IDEMPOTENCY_DB }), cacheKeyPrefix })(c, next),
  (c) => origin(c),
);

export default app;
