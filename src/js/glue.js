// The JavaScript the Worker's wasm calls, declared in src/js.rs. Two parts:
// - the panic guard (src/panic_guard.rs);
// - answers built in one call each (src/http.rs).

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
