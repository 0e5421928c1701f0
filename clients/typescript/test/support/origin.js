// A counting origin function on 127.0.0.1 for `/functions/v1/{name}`: /echo
// answers with its call number, so a second run shows as a different answer.

import { createServer } from "node:http";

export async function startOrigin() {
  const calls = new Map();
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const n = (calls.get(req.url) ?? 0) + 1;
      calls.set(req.url, n);
      const body = JSON.stringify({ call: n, body: Buffer.concat(chunks).toString(), key: req.headers["idempotency-key"] ?? null });
      res.writeHead(req.url === "/echo" ? 200 : 404, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    count: (path) => calls.get(path) ?? 0,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}
