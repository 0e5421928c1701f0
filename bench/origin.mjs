// The origin function for the benchmark: a fixed JSON answer on any POST, an
// optional artificial delay (ORIGIN_DELAY_MS), and call counts at GET /count.
import http from "node:http";

const delay = Number(process.env.ORIGIN_DELAY_MS || 0);
const answer = JSON.stringify({ ok: true, result: "fixed answer from the origin" });
const counts = new Map();

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/count") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(Object.fromEntries(counts)));
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    counts.set(req.url, (counts.get(req.url) || 0) + 1);
    const reply = () => {
      res.writeHead(200, { "content-type": "application/json", "x-origin": "bench" });
      res.end(answer);
    };
    if (delay > 0) setTimeout(reply, delay);
    else reply();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`origin listening on ${server.address().port}`);
});
