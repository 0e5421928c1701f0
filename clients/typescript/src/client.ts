// The client: one logical operation = one idempotency key, sent unchanged on
// every attempt, so however often the client tries, idemgate runs the work once
// and every attempt that gets an answer gets the same one.

import {
  KeyInFlightError,
  NetworkError,
  ProblemError,
  RetriesExhaustedError,
  problemError,
  type Answer,
  type OperationInfo,
} from "./errors.js";
import {
  DEFAULT_RETRY_POLICY,
  backoffDelayMs,
  parseHttpDate,
  parseRetryAfter,
  retryAfterDelayMs,
  type RetryPolicy,
} from "./retry.js";

/** The `fetch` the client calls: the global one by default; inject another for Workers service bindings or tests. */
export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface ClientOptions {
  /** Where idemgate is, e.g. `https://idemgate.example.com` (a path prefix is kept). */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <token>`; a function is called before every attempt (token refresh). */
  token?: string | (() => string | Promise<string>);
  fetch?: FetchLike;
  /** Overrides of the default retry policy for every call. */
  retry?: Partial<RetryPolicy>;
  /** Milliseconds since the epoch (default `Date.now`): the deadline and HTTP-date `Retry-After`s are read with it. */
  now?: () => number;
  /** Waits between attempts (default `setTimeout`); must reject when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1) (default `Math.random`): the backoff's jitter. */
  random?: () => number;
  /** Makes a new key for an operation (default `crypto.randomUUID()`). */
  newKey?: () => string;
  /** Sent with every request (the client's own headers win). */
  headers?: Record<string, string>;
  /** Called before each wait between attempts: for logs and metrics. */
  onRetry?: (event: RetryEvent) => void;
}

export interface RequestOptions {
  /**
   * The operation's idempotency key. Default: a new random key for this call,
   * reused by its retries. Pass your own to make an operation idempotent across
   * calls (store it with the intent, e.g. an order id, before the first call).
   * `false` sends no key: the server derives one where the route allows it
   * (document upload), and the client does not retry the write.
   * Ignored for GET, HEAD and OPTIONS, which are never locked.
   */
  key?: string | false;
  /** Asks the server to wait up to this many seconds for a run already in progress (`Prefer: wait=N`). */
  wait?: number;
  /** A JSON body (serialized once; every attempt sends the same bytes). */
  json?: unknown;
  /** A raw body instead of `json` (set its `content-type` in `headers`). */
  body?: string | Uint8Array | ArrayBuffer;
  headers?: Record<string, string>;
  /** Cancels the operation: no more attempts, and the wait in progress ends. */
  signal?: AbortSignal;
  /** Overrides of the retry policy for this call. */
  retry?: Partial<RetryPolicy>;
}

/** A successful answer (status < 400). */
export interface IdemResponse<T = unknown> {
  status: number;
  headers: Headers;
  /** The parsed JSON body; the text for other content types; `undefined` when empty. */
  data: T;
  /** The key sent (or, with `key: false`, the one the server derived and echoed). */
  key: string | undefined;
  /** This is a stored answer replayed (`Idempotent-Replayed: true`), not a new run. */
  replayed: boolean;
  /** Attempts made, this one included. */
  attempts: number;
  /** `Preference-Applied` (e.g. `wait=10`): the server waited for the first run. */
  preferenceApplied: string | undefined;
  /** The server's `X-Request-Id` for this attempt (each attempt gets its own): quote it when reporting a problem. */
  requestId: string | undefined;
  /**
   * `Idempotency-Expires`: when the stored answer expires and the key is new again
   * (the same instant on the first run and on every replay); `undefined` when the
   * answer has none (a read, a call without a key) or it is not an HTTP-date.
   */
  expiresAt: Date | undefined;
}

export interface RetryEvent {
  key: string | undefined;
  /** The attempt that failed (1 for the first). */
  attempt: number;
  /** How long the client waits before the next one. */
  delayMs: number;
  /** What failed: a retryable answer or a network error. */
  error: ProblemError | NetworkError;
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export class IdemgateClient {
  readonly #baseUrl: string;
  readonly #token: ClientOptions["token"];
  readonly #fetch: FetchLike;
  readonly #policy: RetryPolicy;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly #random: () => number;
  readonly #newKey: () => string;
  readonly #headers: Record<string, string>;
  readonly #onRetry: ((event: RetryEvent) => void) | undefined;

  constructor(options: ClientOptions) {
    if (!options.baseUrl) throw new TypeError("IdemgateClient: baseUrl is required");
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#token = options.token;
    // Unbound global fetch throws "Illegal invocation" in browsers and Workers.
    this.#fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#policy = { ...DEFAULT_RETRY_POLICY, ...options.retry };
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? sleep;
    this.#random = options.random ?? Math.random;
    this.#newKey = options.newKey ?? randomKey;
    this.#headers = { ...options.headers };
    this.#onRetry = options.onRetry;
  }

  /** A fresh key, for callers that store the key with the intent before the first call. */
  newKey(): string {
    return this.#newKey();
  }

  post<T = unknown>(path: string, json?: unknown, options: Omit<RequestOptions, "json"> = {}): Promise<IdemResponse<T>> {
    return this.request<T>("POST", path, json === undefined ? options : { ...options, json });
  }

  put<T = unknown>(path: string, json?: unknown, options: Omit<RequestOptions, "json"> = {}): Promise<IdemResponse<T>> {
    return this.request<T>("PUT", path, json === undefined ? options : { ...options, json });
  }

  get<T = unknown>(path: string, options: Omit<RequestOptions, "json" | "body" | "key" | "wait"> = {}): Promise<IdemResponse<T>> {
    return this.request<T>("GET", path, options);
  }

  delete<T = unknown>(path: string, options: Omit<RequestOptions, "json" | "body"> = {}): Promise<IdemResponse<T>> {
    return this.request<T>("DELETE", path, options);
  }

  /**
   * One logical operation: attempts until an answer that is final (a success, a
   * stored answer, an error that a retry cannot change) or until the policy's
   * deadline or attempts run out (`RetriesExhaustedError`). Every attempt
   * carries the same key and the same body bytes.
   */
  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<IdemResponse<T>> {
    const m = method.toUpperCase();
    const policy = { ...this.#policy, ...options.retry };
    const safe = SAFE_METHODS.has(m);
    const key = safe || options.key === false ? undefined : (options.key ?? this.#newKey());
    // Without a key a second attempt of a write could run it twice.
    const mayRetry = safe || key !== undefined;
    const body = safe ? undefined : options.json !== undefined ? JSON.stringify(options.json) : options.body;
    const url = this.#baseUrl + (path.startsWith("/") ? path : `/${path}`);
    // A URL that cannot parse is the caller's mistake: fail now, not retry it as a network error.
    new URL(url);
    const signal = options.signal;

    const started = this.#now();
    const deadline = started + policy.deadlineMs;
    for (let attempts = 1; ; attempts++) {
      signal?.throwIfAborted();
      const info: OperationInfo = { key, attempts };
      // An attempt never outlives the deadline, nor asks the server to wait past it.
      const budgetMs = Math.min(policy.attemptTimeoutMs, deadline - this.#now());
      const headers = await this.#headersFor(options, key, body, budgetMs);
      const init: RequestInit = { method: m, headers };
      if (body !== undefined) init.body = body as BodyInit;

      const outcome = await this.#attempt(url, init, budgetMs, info, signal);
      let failure: ProblemError | NetworkError;
      if (outcome instanceof NetworkError) {
        failure = outcome;
      } else if (outcome.status < 400) {
        return success<T>(outcome, key, attempts);
      } else {
        failure = problemError(outcome, info);
        if (!retryable(failure, policy)) throw failure;
      }
      if (!mayRetry || policy.maxAttempts <= 1) throw failure;
      if (attempts >= policy.maxAttempts) {
        throw new RetriesExhaustedError("max-attempts", failure, this.#now() - started, info);
      }
      const asked = failure instanceof ProblemError ? failure.retryAfterMs : undefined;
      const delayMs =
        asked !== undefined
          ? retryAfterDelayMs(asked, policy, this.#random)
          : backoffDelayMs(attempts, policy, this.#random);
      // No time left for another attempt after the wait: give up now rather than sleep for nothing.
      if (this.#now() + delayMs >= deadline) {
        throw new RetriesExhaustedError("deadline", failure, this.#now() - started, info);
      }
      this.#onRetry?.({ key, attempt: attempts, delayMs, error: failure });
      await this.#sleep(delayMs, signal);
    }
  }

  async #headersFor(
    options: RequestOptions,
    key: string | undefined,
    body: string | Uint8Array | ArrayBuffer | undefined,
    budgetMs: number,
  ): Promise<Headers> {
    const headers = new Headers(this.#headers);
    // set, not a merged object: `Content-Type` here replaces `content-type` there.
    for (const [name, value] of Object.entries(options.headers ?? {})) headers.set(name, value);
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    if (token) headers.set("authorization", `Bearer ${token}`);
    if (key !== undefined) headers.set("idempotency-key", key);
    if (body !== undefined && !headers.has("content-type")) {
      headers.set("content-type", options.json !== undefined ? "application/json" : "application/octet-stream");
    }
    if (options.wait !== undefined && key !== undefined) {
      const wait = Math.min(Math.floor(options.wait), Math.floor(budgetMs / 1000));
      if (wait > 0) headers.set("prefer", `wait=${wait}`);
      else headers.delete("prefer");
    }
    return headers;
  }

  /** One request; the whole body is read inside the attempt's time limit. */
  async #attempt(
    url: string,
    init: RequestInit,
    timeoutMs: number,
    info: OperationInfo,
    signal: AbortSignal | undefined,
  ): Promise<Answer | NetworkError> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, Math.max(1, timeoutMs));
    const cancel = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      const res = await this.#fetch(url, { ...init, signal: controller.signal });
      const text = await res.text();
      const now = this.#now();
      const expires = res.headers.get("idempotency-expires");
      const expiresMs = expires === null ? undefined : parseHttpDate(expires.trim(), now);
      return {
        status: res.status,
        headers: res.headers,
        body: parseBody(res.headers, text),
        replayed: isReplay(res.headers),
        retryAfterMs: parseRetryAfter(res.headers.get("retry-after"), now),
        requestId: res.headers.get("x-request-id") ?? undefined,
        expiresAt: expiresMs === undefined ? undefined : new Date(expiresMs),
        url,
      };
    } catch (e) {
      // The caller's cancellation is not a network failure: it ends the operation.
      if (signal?.aborted) throw signal.reason;
      return new NetworkError(e, timedOut, info);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", cancel);
    }
  }
}

/**
 * Whether a second attempt with the same key can get a different answer.
 * A replayed answer is stored and final; 409 only when the key's first request
 * still runs (a workflow 409 is final); 429 only when the server said when;
 * 5xx from the policy's list (idemgate stores none of them).
 */
function retryable(e: ProblemError, policy: RetryPolicy): boolean {
  if (e.replayed) return false;
  if (e.status === 409) return e instanceof KeyInFlightError;
  if (e.status === 429) return e.retryAfterMs !== undefined;
  return e.status >= 500 && policy.retryStatuses.includes(e.status);
}

function success<T>(answer: Answer, key: string | undefined, attempts: number): IdemResponse<T> {
  return {
    status: answer.status,
    headers: answer.headers,
    data: answer.body as T,
    key: key ?? answer.headers.get("idempotency-key") ?? undefined,
    replayed: answer.replayed,
    attempts,
    preferenceApplied: answer.headers.get("preference-applied") ?? undefined,
    requestId: answer.requestId,
    expiresAt: answer.expiresAt,
  };
}

function isReplay(headers: Headers): boolean {
  return headers.get("idempotent-replayed") === "true" || headers.get("x-idempotency-replay") === "true";
}

const JSON_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

function parseBody(headers: Headers, text: string): unknown {
  if (text === "") return undefined;
  if (!JSON_TYPE.test(headers.get("content-type") ?? "")) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      signal?.removeEventListener("abort", stop);
      resolve();
    };
    const stop = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    // setTimeout fires at once past 2^31-1 ms; the deadline ends longer waits anyway.
    const timer = setTimeout(done, Math.min(ms, 2 ** 31 - 1));
    signal?.addEventListener("abort", stop, { once: true });
  });
}

/** A version 4 UUID: `crypto.randomUUID` where it exists (it needs a secure context in browsers). */
function randomKey(): string {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
