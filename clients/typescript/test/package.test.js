// The package as a user gets it: the files `npm pack` puts in the tarball, the
// license beside the project's, the generated types in step with openapi.json,
// a README that reads on its own, and the tarball installed and imported (its
// JavaScript and its types) in a project of its own. Needs `npm run build` (pretest).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const PKG_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(PKG_DIR, "..", "..");
const pkg = JSON.parse(readFileSync(join(PKG_DIR, "package.json"), "utf8"));
const NPM = process.platform === "win32" ? "npm.cmd" : "npm";

// Exactly what a user needs: the compiled modules, their declarations, the
// README and the license (npm adds package.json). No sources, tests, source
// maps or configuration.
const EXPECTED_FILES = [
  "LICENSE",
  "README.md",
  "dist/client.d.ts",
  "dist/client.js",
  "dist/errors.d.ts",
  "dist/errors.js",
  "dist/index.d.ts",
  "dist/index.js",
  "dist/openapi.d.ts",
  "dist/openapi.js",
  "dist/retry.d.ts",
  "dist/retry.js",
  "package.json",
];

const scratch = [];
after(() => {
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

function npm(args, cwd) {
  return execFileSync(NPM, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

describe("the package", () => {
  test("npm pack lists exactly the files a user needs", () => {
    // --ignore-scripts: dist/ is already built (pretest), prepack need not build it again.
    const [packed] = JSON.parse(npm(["pack", "--dry-run", "--json", "--ignore-scripts"], PKG_DIR));
    const files = packed.files.map((f) => f.path).sort();
    assert.deepEqual(
      files,
      EXPECTED_FILES,
      "the tarball's files changed: adjust `files` in package.json (or EXPECTED_FILES here, for a new module)",
    );
    assert.equal(packed.name, "@idemgate/client");
  });

  test("its LICENSE is the project's", () => {
    const here = readFileSync(join(PKG_DIR, "LICENSE"), "utf8");
    const root = readFileSync(join(ROOT, "LICENSE"), "utf8");
    assert.ok(here === root, "clients/typescript/LICENSE differs from the repository's LICENSE: copy it (cp LICENSE clients/typescript/)");
    assert.match(here, /^\s*Apache License\s+Version 2\.0, January 2004/);
    assert.equal(pkg.license, "Apache-2.0");
  });

  test("src/openapi.ts is what openapi-typescript generates from the committed openapi.json", () => {
    // The same command as `npm run generate`, writing to stdout instead of the file.
    const words = pkg.scripts.generate.split(/\s+/);
    assert.equal(words[0], "openapi-typescript");
    assert.deepEqual(words.slice(-2), ["-o", "src/openapi.ts"]);
    const cli = join(PKG_DIR, "node_modules", "openapi-typescript", "bin", "cli.js");
    const fresh = execFileSync(process.execPath, [cli, ...words.slice(1, -2)], {
      cwd: PKG_DIR,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
    const committed = readFileSync(join(PKG_DIR, "src", "openapi.ts"), "utf8");
    assert.ok(
      committed === fresh,
      "src/openapi.ts differs from what openapi-typescript generates from ../../openapi.json: " +
        "run `npm run generate` in clients/typescript (after `./x generate` at the root when the Rust code changed) and commit src/openapi.ts",
    );
    assert.match(committed, /^export type Problem = components\['schemas'\]\['Problem'\];$/m);
  });

  test("the README links nowhere relative to the repository", () => {
    const readme = readFileSync(join(PKG_DIR, "README.md"), "utf8");
    const targets = [...readme.matchAll(/\]\(([^)\s]+)[^)]*\)/g)].map((m) => m[1]);
    assert.ok(targets.length > 0, "the README has links");
    const relative = targets.filter((t) => !/^https:\/\//.test(t) && !t.startsWith("#"));
    assert.deepEqual(relative, [], "a link in the README breaks outside the repository: make it absolute");
    for (const section of ["Install", "Retries", "Errors", "Results"]) {
      assert.match(readme, new RegExp(`^## ${section}`, "m"), `the README has a "${section}" section`);
    }
  });

  test("package.json names the repository, its directory and the entry points", () => {
    assert.equal(pkg.private, undefined);
    assert.deepEqual(pkg.repository, {
      type: "git",
      url: "git+https://github.com/idemgate/idemgate.git",
      directory: "clients/typescript",
    });
    assert.deepEqual(pkg.exports["."], { types: "./dist/index.d.ts", import: "./dist/index.js" });
    assert.equal(pkg.exports["./package.json"], "./package.json");
    assert.equal(pkg.sideEffects, false);
    assert.match(pkg.devDependencies["openapi-typescript"], /^\d+\.\d+\.\d+$/, "openapi-typescript pinned exactly");
  });

  test("the tarball installs in another project, which imports it and type-checks against it", () => {
    const packDir = tempDir("idemgate-pack-");
    const [packed] = JSON.parse(npm(["pack", "--json", "--ignore-scripts", "--pack-destination", packDir], PKG_DIR));
    const app = tempDir("idemgate-user-");
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "user", private: true, type: "module" }));
    // No dependencies to fetch: the tarball is the whole install.
    npm(["install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", join(packDir, packed.filename)], app);

    const loaded = execFileSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `import * as m from "@idemgate/client";
         import meta from "@idemgate/client/package.json" with { type: "json" };
         console.log(JSON.stringify({ client: typeof m.IdemgateClient, reused: typeof m.KeyReusedError,
           statuses: m.DEFAULT_RETRY_POLICY.retryStatuses, version: meta.version }));`,
      ],
      { cwd: app, encoding: "utf8" },
    );
    assert.deepEqual(JSON.parse(loaded), {
      client: "function",
      reused: "function",
      statuses: [502, 503, 504],
      version: pkg.version,
    });

    writeFileSync(
      join(app, "use.ts"),
      `import { IdemgateClient, ProblemError, type Document, type Export, type KeyState, type Problem } from "@idemgate/client";
const idem = new IdemgateClient({ baseUrl: "http://127.0.0.1:8787" });
export async function upload(): Promise<[Document, string | undefined, Date | undefined]> {
  const r = await idem.post<Document>("/v1/documents", { filename: "a.txt", content_type: "text/plain", content: "a" });
  return [r.data, r.requestId, r.expiresAt];
}
export function state(k: KeyState): string { return k.state === "completed" ? String(k.expires_at) : String(k.lease_expires_at); }
export function status(e: Export): string { return e.status; }
export function slug(p: Problem): string { return p.type; }
export function id(e: unknown): string | undefined { return e instanceof ProblemError ? e.requestId : undefined; }
`,
    );
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", lib: ["ES2022", "DOM"], strict: true, noEmit: true, types: [] },
        files: ["use.ts"],
      }),
    );
    const tsc = join(PKG_DIR, "node_modules", "typescript", "bin", "tsc");
    try {
      execFileSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: app, encoding: "utf8" });
    } catch (e) {
      assert.fail(`a user's TypeScript does not compile against the package:\n${e.stdout}${e.stderr}`);
    }
  });
});
