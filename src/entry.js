// The Worker's entry module (wrangler.toml `main`): what worker-build generates
// (build/index.js: the Worker's `fetch` and `scheduled`, the `RecordMirror`
// object), with the `KeyGate` object served as a `DurableObject` subclass.
//
// workers-rs 0.8.7 exports a Rust Durable Object as a plain class, which
// workerd serves by `fetch` only. RPC needs a `DurableObject` subclass, and the
// Worker reaches its key objects by RPC (src/object_rpc.rs: the last measured
// gap to hono-idempotency's Durable Object store was the kind of hop). This
// class holds the wasm object and forwards to it; it adds no logic of its own.
// The wasm object is worker-build's proxy, which re-creates it after a Rust
// panic killed the wasm instance (src/panic_guard.rs), as it did when it was
// the exported class.
import { DurableObject } from "cloudflare:workers";
import worker, { KeyGate as WasmKeyGate, RecordMirror } from "../build/index.js";

export default worker;
export { RecordMirror };

export class KeyGate extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.gate = new WasmKeyGate(ctx, env);
  }

  // The Worker's call: execute, state or release (object_rpc.rs).
  serve(call, envelope, body) {
    return this.gate.serve(call, envelope, body);
  }

  // The same call by `fetch`, as an older Worker version sends it.
  fetch(request) {
    return this.gate.fetch(request);
  }

  alarm() {
    return this.gate.alarm();
  }
}
