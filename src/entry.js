// The Worker's entry module (wrangler.toml `main`): what worker-build generates
// (build/index.js: the Worker's `fetch` and `scheduled`), with the `KeyGate`
// and `RecordMirror` objects served as `DurableObject` subclasses.
//
// workers-rs 0.8.7 exports a Rust Durable Object as a plain class, which
// workerd serves by `fetch` only. RPC needs a `DurableObject` subclass, and the
// Worker reaches its key objects, and they their record mirrors, by RPC (a
// method call costs less than a `fetch` with its request and response). Each
// class holds the wasm object and forwards to it; it adds no logic of its own.
// The wasm object is worker-build's proxy, which re-creates it after a Rust
// panic killed the wasm instance (src/panic_guard.rs), as it did when it was
// the exported class.
import { DurableObject } from "cloudflare:workers";
import worker, { KeyGate as WasmKeyGate, RecordMirror as WasmRecordMirror } from "../build/index.js";

// worker-build's default export is a `WorkerEntrypoint` class behind a Proxy:
// the runtime would construct it for every request, and the Proxy wraps each
// method it hands out, so that a wasm instance a Rust panic killed is
// re-created first (`criticalError` in the shim's state, set by workers-rs's
// panic hook). This handler calls the class's own `fetch` and `scheduled`
// with the request's `env` and `ctx` instead, and goes through the Proxy only
// when the shim must re-create the instance; a trap it sees marks the instance
// as the Proxy would.
const shim = globalThis.__worker_init_state;
const direct = { fetch: worker.prototype.fetch, scheduled: worker.prototype.scheduled };

function call(method, arg, env, ctx) {
  if (!shim || shim.criticalError) return new worker(ctx, env)[method](arg);
  try {
    return direct[method].call({ env, ctx }, arg);
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) shim.criticalError = true;
    throw e;
  }
}

export default {
  fetch(request, env, ctx) {
    return call("fetch", request, env, ctx);
  },
  scheduled(event, env, ctx) {
    return call("scheduled", event, env, ctx);
  },
};

export class KeyGate extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.gate = new WasmKeyGate(ctx, env);
  }

  // The Worker's call: execute, state or release (object_rpc.rs).
  serve(call, envelope, body, form) {
    return this.gate.serve(call, envelope, body, form);
  }

  // The same call by `fetch`, as an older Worker version sends it.
  fetch(request) {
    return this.gate.fetch(request);
  }

  alarm() {
    return this.gate.alarm();
  }
}

// A record mirror, reached by RPC (src/mirror_do.rs) in the same way.
export class RecordMirror extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.mirror = new WasmRecordMirror(ctx, env);
  }

  // A key object's call: accept, forget or stats (mirror_do.rs).
  call(method, op, body) {
    return this.mirror.call(method, op, body);
  }

  // The same call by `fetch`, as a key object of an older version sends it.
  fetch(request) {
    return this.mirror.fetch(request);
  }

  alarm() {
    return this.mirror.alarm();
  }
}
