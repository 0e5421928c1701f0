// The floor: the least a per-key Durable Object idempotency layer does on this
// stack, hand-written in JavaScript — no auth, no validation, no fingerprint, no
// Rust/wasm. `./x bench` runs it beside idemgate so the table shows how much of a
// first execution is the platform's (a new SQLite-backed object per key, the lease
// write, the answer write, the D1 record) and how much is idemgate's own.
// With `x-floor-shards: N` it shows the other layout a gate can take: keys
// hashed into N long-lived objects (no new SQLite database per key). With
// `x-floor-rpc: 1` the Worker reaches the object by RPC (a method call, as
// hono-idempotency's Durable Object store is reached) instead of `fetch`, with
// the same storage steps: what the kind of hop costs.
// Benchmark only: never part of the Worker.
import { DurableObject } from "cloudflare:workers";

const RETRY_MS = 30_000;

export class FloorGate extends DurableObject {
  async fetch(request) {
    // `x-floor-hop: 1` measures the hop alone: no storage, no origin. (The body
    // is still read: wrangler dev's proxy answers 503 to a POST whose body is not.)
    if (request.headers.get("x-floor-hop")) {
      await request.arrayBuffer();
      return new Response("ok");
    }
    const key = request.headers.get("idempotency-key");
    const answer = await this.run(key, await request.arrayBuffer(), request.headers.get("content-type"));
    return new Response(answer.body, { status: answer.status, headers: answer.headers });
  }

  // The storage steps, reached by `fetch` above or by RPC from the Worker.
  async run(key, body, contentType) {
    const sql = this.ctx.storage.sql;
    if (!this.ready) {
      // One row per key: a per-key object holds one, a shard many.
      sql.exec("CREATE TABLE IF NOT EXISTS slot (key TEXT PRIMARY KEY, state TEXT NOT NULL, body TEXT)");
      this.ready = true;
    }
    const slot = sql.exec("SELECT state, body FROM slot WHERE key = ?", key).toArray()[0];
    if (slot?.state === "completed") return { status: 200, body: slot.body, headers: { "idempotent-replayed": "true" } };
    if (slot) return { status: 409, body: "in flight", headers: {} };
    // The lease: durable before the origin sees the request (output gate).
    sql.exec("INSERT INTO slot (key, state) VALUES (?, 'processing')", key);
    const headers = contentType ? { "content-type": contentType } : {};
    const origin = await fetch(this.env.UPSTREAM_URL, { method: "POST", body, headers });
    const answer = await origin.text();
    if (origin.status >= 500) {
      sql.exec("DELETE FROM slot WHERE key = ?", key);
      return { status: origin.status, body: answer, headers: {} };
    }
    // The answer, durable before the reply; the alarm that would retry the D1
    // record commits with it.
    sql.exec("UPDATE slot SET state = 'completed', body = ? WHERE key = ?", answer, key);
    this.ctx.storage.setAlarm(Date.now() + RETRY_MS);
    this.ctx.waitUntil(
      this.env.DB.prepare("INSERT OR REPLACE INTO records (key, status, body, created_at) VALUES (?, ?, ?, ?)")
        .bind(key, origin.status, answer, Date.now())
        .run(),
    );
    return { status: origin.status, body: answer, headers: { "content-type": "application/json" } };
  }

  async alarm() {}
}

function fnv1a(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok");
    const key = request.headers.get("idempotency-key");
    if (!key) {
      const origin = await fetch(env.UPSTREAM_URL, { method: "POST", body: request.body, headers: request.headers });
      return new Response(origin.body, { status: origin.status, headers: origin.headers });
    }
    // `x-floor-shards: N`: the sharded design — keys hashed into N long-lived
    // objects, each still serializing per key — instead of one object per key.
    const shards = Number(request.headers.get("x-floor-shards") || 0);
    const name = shards > 0 ? `shard-${fnv1a(key) % shards}` : key;
    const stub = env.FLOOR_GATE.get(env.FLOOR_GATE.idFromName(name));
    if (request.headers.get("x-floor-rpc")) {
      const answer = await stub.run(key, await request.arrayBuffer(), request.headers.get("content-type"));
      return new Response(answer.body, { status: answer.status, headers: answer.headers });
    }
    return stub.fetch(request);
  },
};
