// A TCP proxy in front of the dev server that can drop a connection the moment
// the answer starts to come back: the request reached the server and its work
// ran, but the client never hears the answer — the case an idempotency key is for.

import { connect, createServer } from "node:net";

export async function startProxy(targetPort) {
  let dropsArmed = 0;
  let dropped = 0;
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    sockets.add(client).add(upstream);
    const forget = () => sockets.delete(client) && sockets.delete(upstream);
    client.on("close", forget);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("data", (chunk) => upstream.write(chunk));
    client.on("end", () => upstream.end());
    upstream.on("data", (chunk) => {
      if (dropsArmed > 0) {
        dropsArmed--;
        dropped++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    upstream.on("end", () => client.end());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Drops the next `n` answers (the connection, not just the bytes). */
    dropNextAnswers: (n = 1) => (dropsArmed += n),
    get dropped() {
      return dropped;
    },
    stop: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(resolve);
      }),
  };
}
