// A real `wrangler dev` for the client's end-to-end tests, started the way
// tests/e2e/conftest.py starts it: through the project's dev command (`./x dev`,
// which applies the D1 migrations), on a free port and a fresh state directory,
// with the Worker's settings as environment variables; stopped by process group.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
export const SECRET = "client-e2e-secret";

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** An HS256 JWT the dev server accepts (claims as in the README's "Endpoints"). */
export function token(sub, { tenant = sub, roles = [], ttlSeconds = 3600 } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const input = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, tenant, roles, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${input}.${createHmac("sha256", SECRET).update(input).digest("base64url")}`;
}

export async function startServer(vars = {}, { timeoutMs = 120_000 } = {}) {
  const port = await freePort();
  const state = mkdtempSync(join(tmpdir(), "idemgate-client-e2e-"));
  const logPath = join(state, `dev-${port}.log`);
  const log = openSync(logPath, "w");
  const child = spawn(join(ROOT, "x"), ["dev"], {
    cwd: ROOT,
    env: {
      ...process.env,
      AUTH_JWT_SECRET: SECRET,
      IDEMGATE_TEST_HOOKS: "1",
      ...vars,
      PORT: String(port),
      IDEMGATE_STATE_DIR: state,
      IDEMGATE_SKIP_BUILD: "1",
      CI: "1",
    },
    stdio: ["ignore", log, log],
    // Its own process group: stop() reaches wrangler and workerd through one pid.
    detached: true,
  });
  let exited = false;
  const exit = new Promise((resolve) => child.once("exit", () => ((exited = true), resolve())));
  const url = `http://127.0.0.1:${port}`;
  const tail = () => readFileSync(logPath, "utf8").slice(-3000);

  const stop = async () => {
    if (!exited) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {}
      const killed = await Promise.race([exit.then(() => true), new Promise((r) => setTimeout(() => r(false), 15_000))]);
      if (!killed) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
        await exit;
      }
    }
    rmSync(state, { recursive: true, force: true });
  };

  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) {
      const out = tail();
      await stop();
      throw new Error(`dev server exited:\n${out}`);
    }
    try {
      const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) return { url, port, state, stop, log: tail };
    } catch {}
    await new Promise((r) => setTimeout(r, 300));
  }
  const out = tail();
  await stop();
  throw new Error(`dev server did not become ready:\n${out}`);
}
