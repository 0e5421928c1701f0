// The JavaScript the Worker's wasm calls, declared in src/js.rs. Three parts:
// - the panic guard (src/panic_guard.rs);
// - answers built in one call each (src/http.rs);
// - a passthrough's call to the origin (src/upstream.rs);
// - a JWKS's fetch and a signature's check with one of its keys (src/frontend_worker/isolate.rs).

// What a Rust panic leaves behind (src/panic_guard.rs): every request in
// flight in this isolate answers 500 problem+json from here, without the dead
// wasm instance, and the Durable Objects it served are reset.
//
// The requests in flight: each one's promise (what the Worker's `fetch`
// returned) → how to settle it and what its log line needs.
const pending = new Map();
let problem = "";
// Every answer's request id header (the log line's `request_id`).
const REQUEST_ID = "x-request-id";
export function set_problem(body) {
  problem = body;
}
export function guard_open(requestId, method, route, startedMs) {
  let settle;
  const settled = new Promise((resolve) => { settle = resolve; });
  const request = { settle, requestId, method, route, startedMs };
  // The 500 is built here, in the request's own continuation: the runtime
  // refuses an I/O object (a Response) made on behalf of another request,
  // and the hook runs in whichever request panicked.
  const answer = settled.then((response) => response ?? died(request));
  pending.set(answer, request);
  return answer;
}
export function guard_close(answer, response) {
  const request = pending.get(answer);
  if (request === undefined) return false;
  pending.delete(answer);
  request.settle(response);
  return true;
}
function died({ requestId, method, route, startedMs }) {
  // The request's log line, which the dead instance cannot print: the
  // fields and order of request_log's line for a request that ended in a
  // 500 `error` before it was authenticated.
  try {
    console.log(JSON.stringify({
      event: "request",
      time: new Date(startedMs).toISOString(),
      request_id: requestId,
      method,
      route,
      outcome: "error",
      status: 500,
      total_ms: Math.max(0, Date.now() - startedMs),
    }));
  } catch (e) {}
  return new Response(problem, {
    status: 500,
    headers: { "content-type": "application/problem+json", [REQUEST_ID]: requestId },
  });
}
const objects = new Map();
let nextObject = 0;
export function object_enter(state) {
  objects.set(++nextObject, state);
  return nextObject;
}
export function object_leave(id) {
  objects.delete(id);
}
export function instance_died(reason) {
  const requests = [...pending.values()];
  pending.clear();
  for (const request of requests) request.settle(undefined);
  const states = new Set(objects.values());
  objects.clear();
  // After the trap, and after the answers above have gone out: abort() cannot
  // be caught, so it must not run inside the hook.
  if (states.size > 0) {
    setTimeout(() => {
      for (const state of states) {
        try { state.abort(reason); } catch (e) {}
      }
    }, 0);
  }
}

// Answers built in one call each (src/http.rs): each call from
// wasm into JavaScript passes its strings through a TextEncoder/TextDecoder,
// so a whole header set, or a whole answer, goes over at once.
function each(lines, add) {
  let at = 0;
  while (at < lines.length) {
    const colon = lines.indexOf(":", at);
    let end = lines.indexOf("\n", colon);
    if (end < 0) end = lines.length;
    try {
      add(lines.slice(at, colon), lines.slice(colon + 1, end));
    } catch (e) {}
    at = end + 1;
  }
}
// A request's headers as `name:value` lines (http::parse_header_lines reads
// them): one call from wasm for all of them instead of one per header asked.
export function header_lines(headers) {
  let lines = "";
  for (const [name, value] of headers) lines += (lines ? "\n" : "") + name + ":" + value;
  return lines;
}
export function header_fill(headers, appended, replaced) {
  each(appended, (name, value) => headers.append(name, value));
  each(replaced, (name, value) => headers.set(name, value));
}
function finished(headers, timing, requestId) {
  if (timing) headers.append("server-timing", timing);
  headers.set(REQUEST_ID, requestId);
}
function answer(status, headers, body, timing, requestId) {
  try {
    finished(headers, timing, requestId);
  } catch (e) {
    // An immutable set (a fetched answer's): a copy takes the two.
    headers = new Headers(headers);
    finished(headers, timing, requestId);
  }
  return new Response(body, { status, headers });
}
export function answer_bytes(status, headers, body, timing, requestId) {
  // `body` views the wasm memory: the answer keeps a copy.
  return answer(status, headers, body.slice(), timing, requestId);
}
export function answer_stream(status, headers, body, timing, requestId) {
  return answer(status, headers, body ?? null, timing, requestId);
}

// A passthrough's call to the origin (src/upstream.rs): the origin's answer with
// its hop-by-hop headers removed and the `upstream` phase timed, or the 504/502
// problem. What to call and with what is decided in Rust; this is only the I/O,
// in one call from wasm instead of one per header, option and await.
let hopByHop = [];
const upstreamProblem = {};
export function pass_setup(hop_by_hop, timeout_problem, unreachable_problem) {
  hopByHop = hop_by_hop.split(",");
  upstreamProblem[504] = timeout_problem;
  upstreamProblem[502] = unreachable_problem;
}
// Server-Timing's `name;dur=…`, to a tenth of a millisecond (http::Timings).
function phase(name, ms) {
  return `${name};dur=${(Math.round(ms * 10) / 10).toFixed(1)}`;
}
function failed(status) {
  return new Response(upstreamProblem[status], {
    status,
    headers: { "content-type": "application/problem+json" },
  });
}
// `finish`: the Worker's own answer, settled here (frontend_worker::quick_pass):
// the `worker` phase since `startedMs` and the request id are added, and
// `logged` (if any) is then called with the status and the `Server-Timing` as
// it leaves. Without it the Worker finishes the answer itself.
export async function pass_through(body, url, forward, timeoutMs, finish, requestId, startedMs, logged) {
  const headers = new Headers();
  each(forward, (name, value) => headers.set(name, value));
  const sent = Date.now();
  let answer, origin;
  try {
    origin = await fetch(url, {
      method: "POST",
      headers,
      body: body ?? null,
      signal: AbortSignal.timeout(timeoutMs),
    });
    // A status no answer can carry (not 200-599, upstream::relayable) makes
    // the `Response` constructor throw: a bad gateway, like an unreachable one.
    const out = new Headers(origin.headers);
    for (const name of hopByHop) out.delete(name);
    answer = new Response(origin.body, { status: origin.status, headers: out });
  } catch (e) {
    // An answer refused after it came: its body is not read, so let it go.
    origin?.body?.cancel().catch(() => {});
    const timedOut = e?.name === "TimeoutError";
    if (!timedOut) console.error(`upstream ${url} unreachable: ${e}`);
    answer = failed(timedOut ? 504 : 502);
  }
  answer.headers.append("server-timing", phase("upstream", Date.now() - sent));
  if (!finish) return answer;
  answer.headers.append("server-timing", phase("worker", Date.now() - startedMs));
  answer.headers.set(REQUEST_ID, requestId);
  if (logged) {
    // After the answer has gone: a panic in it kills no answer.
    const status = answer.status;
    const timing = answer.headers.get("server-timing");
    queueMicrotask(() => logged(status, timing));
  }
  return answer;
}

// A JWKS's fetch and a signature's check with one of its keys
// (src/frontend_worker/isolate.rs; which key, and whether to fetch, is decided
// in Rust: auth::jwks). Only the I/O and WebCrypto are here.
//
// Requests that ask for the same JWKS while it is being fetched share the one
// fetch. Resolves to "ok\n<Cache-Control>\n<body>" or "error\n<why>"; never rejects.
const jwksFetches = new Map();
export function jwks_fetch(url, timeoutMs) {
  let fetching = jwksFetches.get(url);
  if (fetching === undefined) {
    fetching = (async () => {
      try {
        const answer = await fetch(url, {
          headers: { accept: "application/json" },
          signal: AbortSignal.timeout(timeoutMs),
        });
        const body = await answer.text();
        if (answer.status !== 200) return `error\nthe JWKS answered ${answer.status}`;
        return `ok\n${answer.headers.get("cache-control") ?? ""}\n${body}`;
      } catch (e) {
        return `error\n${e?.name === "TimeoutError" ? "timed out" : e}`;
      } finally {
        jwksFetches.delete(url);
      }
    })();
    jwksFetches.set(url, fetching);
  }
  return fetching;
}
// Imported keys, by their JWK and algorithm (a JWKS holds a few keys).
const cryptoKeys = new Map();
// Whether `signature` is `data`'s signature by the public key `jwk` (a JWK's
// JSON) under the WebCrypto algorithms `importParams` and `verifyParams`
// (JSON). Resolves to false for a key the runtime refuses; never rejects.
export async function jwk_verify(jwk, importParams, verifyParams, signature, data) {
  // Both view the wasm memory: copies, before any await.
  signature = signature.slice();
  data = data.slice();
  try {
    const id = importParams + jwk;
    let key = cryptoKeys.get(id);
    if (key === undefined) {
      key = await crypto.subtle.importKey("jwk", JSON.parse(jwk), JSON.parse(importParams), false, ["verify"]);
      if (cryptoKeys.size >= 64) cryptoKeys.clear();
      cryptoKeys.set(id, key);
    }
    return await crypto.subtle.verify(JSON.parse(verifyParams), key, signature, data);
  } catch (e) {
    console.error(`JWKS key refused by WebCrypto: ${e}`);
    return false;
  }
}
