// The example of docs/client.md (and one call more), type-checked against the built package on every test run
// (`tsc -p tsconfig.examples.json`), so the documented API cannot drift.

import {
  IdemgateClient,
  InvalidTransitionError,
  KeyReusedError,
  RetriesExhaustedError,
  type Document,
  type IdemResponse,
} from "@idemgate/client";

declare const token: string;
declare const orderId: string;
declare const exportId: string;

const idem = new IdemgateClient({ baseUrl: "http://127.0.0.1:8787", token });

// One logical operation, one key: generated here, reused by every retry.
const upload = await idem.post<Document>(
  "/v1/documents",
  { filename: "notes.md", content_type: "text/markdown", content: "# Title\n\nHello world." },
  { wait: 10 }, // if an earlier attempt with this key still runs, wait for its answer
);
console.log(upload.status, upload.data.id, upload.replayed, upload.key, upload.attempts);
console.log(upload.requestId, upload.expiresAt?.toISOString()); // X-Request-Id; Idempotency-Expires as a Date

// Your own key, kept with the intent, makes it idempotent across restarts too.
try {
  const charge: IdemResponse = await idem.post("/functions/v1/charge", { amount: 1000 }, { key: `order-${orderId}` });
  console.log(charge.replayed ? "charged before" : "charged now");
} catch (e) {
  if (e instanceof KeyReusedError) console.error(`key ${e.key} was used for another payload: ${e.detail}`);
  else if (e instanceof RetriesExhaustedError) console.error(`gave up after ${e.attempts} attempts; retry later with key ${e.key}`);
  else throw e;
}

// Tighter limits for one call, and a workflow 409 (never retried) told apart from the rest.
try {
  await idem.put(`/v1/staging/exports/${exportId}/approve`, { change_reason: "checked" }, { retry: { deadlineMs: 5_000 } });
} catch (e) {
  if (e instanceof InvalidTransitionError) console.error(`export is ${e.currentState} (request ${e.requestId})`);
  else throw e;
}
