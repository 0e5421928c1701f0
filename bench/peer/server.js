// The peer: the same origin behind a widely used Node idempotency middleware
// (express-idempotency, Redis adapter). Benchmark-only; never part of the Worker.
//   POST /functions/:name  idempotent (Idempotency-Key), forwarded to the origin
//   POST /plain/:name      the same forwarding without the middleware (baseline)
const express = require("express");
const idempotency = require("express-idempotency");
const RedisAdapter = require("express-idempotency-redis-adapter").default;
const http = require("node:http");

const origin = process.env.ORIGIN_URL;
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function forward(name, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${origin}/${name}`, { method: "POST", agent, headers: { "content-type": "application/json" } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function main() {
  const adapter = new RedisAdapter({ connectionConfig: { url: process.env.REDIS_URL } });
  await adapter.connect();
  const app = express();
  // JSON bodies, as the middleware expects (its intent check deep-compares req.body).
  app.use(express.json({ limit: "2mb" }));
  app.post("/functions/:name", idempotency.idempotency({ dataAdapter: adapter }));
  const handler = async (req, res) => {
    if (idempotency.getSharedIdempotencyService().isHit(req)) return;
    try {
      const r = await forward(req.params.name, JSON.stringify(req.body ?? {}));
      res.status(r.status).type("application/json").send(r.body.toString("utf8"));
    } catch (e) {
      idempotency.getSharedIdempotencyService().reportError(req);
      res.status(502).send("origin unreachable");
    }
  };
  app.post("/functions/:name", handler);
  app.post("/plain/:name", handler);
  const server = app.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
    console.log(`peer listening on ${server.address().port}`);
  });
  server.keepAliveTimeout = 60_000;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
