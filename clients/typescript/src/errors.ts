// The errors a call can end with: one class per kind of answer, so a caller
// writes `catch (e) { if (e instanceof KeyReusedError) … }`.
//
//   IdemgateError                      every error of this package
//   ├─ ProblemError                    an error answer (4xx/5xx), problem+json or not
//   │  ├─ BadRequestError 400          ├─ InvalidKeyError, KeyRequiredError
//   │  ├─ UnauthorizedError 401, ForbiddenError 403, NotFoundError 404
//   │  ├─ ConflictError 409            ├─ KeyInFlightError, InvalidTransitionError
//   │  ├─ PayloadTooLargeError 413
//   │  ├─ UnprocessableError 422       └─ KeyReusedError
//   │  ├─ RateLimitedError 429
//   │  └─ ServerError 5xx              └─ ServiceUnavailableError 503
//   ├─ NetworkError                    no answer: connection refused or dropped, timeout
//   └─ RetriesExhaustedError           gave up: the deadline or the attempts ran out

import type { Problem } from "./openapi.js";

/**
 * Base of idemgate's problem `type` URIs (docs/contract.md, "Statuses"): a type is
 * `/errors/<slug>`, relative to the request's URL; `ProblemError.typeUrl` is it
 * resolved, where the server describes the problem and what to do about it.
 */
export const PROBLEM_BASE = "/errors/";

/** What every error of this package carries about the operation. */
export interface OperationInfo {
  /** The idempotency key sent (the same on every attempt); `undefined` when none was. */
  key: string | undefined;
  /** Attempts made, this one included. */
  attempts: number;
}

export class IdemgateError extends Error {
  readonly key: string | undefined;
  readonly attempts: number;
  /**
   * The server's `X-Request-Id` of the answer this error is about (for
   * `RetriesExhaustedError`, the last answer's); `undefined` when there was no
   * answer or it had none. Quote it when reporting a problem.
   */
  readonly requestId: string | undefined;

  constructor(
    message: string,
    info: OperationInfo,
    options?: { cause?: unknown; requestId?: string | undefined },
  ) {
    super(message, options !== undefined && "cause" in options ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    this.key = info.key;
    this.attempts = info.attempts;
    this.requestId = options?.requestId;
  }
}

/**
 * A problem document (RFC 9457) as the client read it: idemgate's `Problem`
 * (the OpenAPI document's schema, generated into `openapi.ts`), with `detail`
 * optional — an origin function's own problem+json may leave it out — and any
 * extension member kept.
 */
export type ProblemDocument = Omit<Problem, "detail"> & Partial<Pick<Problem, "detail">> & { [extension: string]: unknown };

/** An answer as the client read it; a `ProblemError` is built from an error one. */
export interface Answer {
  status: number;
  headers: Headers;
  /** The parsed JSON body, or the text when it is not JSON. */
  body: unknown;
  replayed: boolean;
  /** `Retry-After`, parsed, in ms. */
  retryAfterMs: number | undefined;
  /** `X-Request-Id`. */
  requestId: string | undefined;
  /** `Idempotency-Expires`, parsed. */
  expiresAt: Date | undefined;
  /** The URL the request went to. */
  url: string;
}

/**
 * An error answer. For problem+json the problem's fields are copied; any other
 * error body (an origin function's own 4xx, a proxy's 503 page) gets RFC 9457's
 * defaults: type `about:blank` and the status's reason phrase as title.
 */
export class ProblemError extends IdemgateError {
  readonly status: number;
  readonly type: string;
  /** `type` resolved against the request's URL: for idemgate's problems, the page that describes it. */
  readonly typeUrl: string;
  readonly title: string;
  readonly detail: string | undefined;
  /** The problem document, or `undefined` when the answer was not problem+json. */
  readonly problem: ProblemDocument | undefined;
  readonly body: unknown;
  readonly headers: Headers;
  /** This error answer is a stored one, replayed (`Idempotent-Replayed: true`). */
  readonly replayed: boolean;
  readonly retryAfterMs: number | undefined;
  /**
   * `Idempotency-Expires` of a stored error answer (a replayed 4xx): when the key
   * is new again; `undefined` when the answer has none.
   */
  readonly expiresAt: Date | undefined;

  constructor(answer: Answer, info: OperationInfo) {
    const problem = asProblem(answer);
    const title = problem?.title ?? reasonPhrase(answer.status);
    const detail = problem?.detail;
    super(`${answer.status} ${title}${detail ? `: ${detail}` : ""}`, info, { requestId: answer.requestId });
    this.status = answer.status;
    this.type = problem?.type ?? "about:blank";
    this.typeUrl = resolve(this.type, answer.url);
    this.title = title;
    this.detail = detail;
    this.problem = problem;
    this.body = answer.body;
    this.headers = answer.headers;
    this.replayed = answer.replayed;
    this.retryAfterMs = answer.retryAfterMs;
    this.expiresAt = answer.expiresAt;
  }

  /** The last path segment of an idemgate problem type (`idempotency-key-reused`), else `undefined`. */
  get slug(): string | undefined {
    return this.type.startsWith(PROBLEM_BASE) ? this.type.slice(PROBLEM_BASE.length) : undefined;
  }
}

export class BadRequestError extends ProblemError {}
/** 400 `invalid-idempotency-key`: the key is empty, too long, has a character outside `A-Za-z0-9-_.:~+/=`, or a `/`-separated segment that is `.` or `..`. */
export class InvalidKeyError extends BadRequestError {}
/** 400 `idempotency-key-required`: the route needs a key and none was sent. */
export class KeyRequiredError extends BadRequestError {}
export class UnauthorizedError extends ProblemError {}
export class ForbiddenError extends ProblemError {}
export class NotFoundError extends ProblemError {}
export class ConflictError extends ProblemError {}
/** 409 `idempotency-key-in-flight`: the first request with this key still runs (seen when retries run out). */
export class KeyInFlightError extends ConflictError {}
/** 409 `invalid-transition`: the export's state does not allow it; never retried. */
export class InvalidTransitionError extends ConflictError {
  get currentState(): string | undefined {
    const s = this.problem?.current_state;
    return typeof s === "string" ? s : undefined;
  }
}
export class PayloadTooLargeError extends ProblemError {}
export class UnprocessableError extends ProblemError {}
/** 422 `idempotency-key-reused`: this key was used with another payload; nothing ran. Use a new key. */
export class KeyReusedError extends UnprocessableError {}
export class RateLimitedError extends ProblemError {}
export class ServerError extends ProblemError {}
export class ServiceUnavailableError extends ServerError {}

/** No answer: the connection failed or dropped, or the attempt timed out. */
export class NetworkError extends IdemgateError {
  /** The attempt was cut by the client's own timeout or deadline. */
  readonly timedOut: boolean;

  constructor(cause: unknown, timedOut: boolean, info: OperationInfo) {
    const why = timedOut ? "the attempt timed out" : errorMessage(cause);
    super(`no answer from the server: ${why}`, info, { cause });
    this.timedOut = timedOut;
  }
}

/**
 * The client gave up. The operation may or may not have run: calling again
 * with the same `key` is safe and returns its answer once there is one.
 */
export class RetriesExhaustedError extends IdemgateError {
  /** Why it stopped: the total deadline, or the number of attempts. */
  readonly reason: "deadline" | "max-attempts";
  readonly elapsedMs: number;
  /** The last failure: a `ProblemError` or a `NetworkError`. */
  declare readonly cause: ProblemError | NetworkError;

  constructor(
    reason: "deadline" | "max-attempts",
    last: ProblemError | NetworkError,
    elapsedMs: number,
    info: OperationInfo,
  ) {
    const what = reason === "deadline" ? "the deadline passed" : `${info.attempts} attempts made`;
    super(`gave up (${what}); last: ${last.message}`, info, { cause: last, requestId: last.requestId });
    this.reason = reason;
    this.elapsedMs = elapsedMs;
  }
}

const BY_SLUG: Record<string, typeof ProblemError> = {
  "invalid-idempotency-key": InvalidKeyError,
  "idempotency-key-required": KeyRequiredError,
  "idempotency-key-in-flight": KeyInFlightError,
  "idempotency-key-reused": KeyReusedError,
  "invalid-transition": InvalidTransitionError,
};

const BY_STATUS: Record<number, typeof ProblemError> = {
  400: BadRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  422: UnprocessableError,
  429: RateLimitedError,
  503: ServiceUnavailableError,
};

/** The error class for an answer: by idemgate problem type first, then by status. */
export function problemError(answer: Answer, info: OperationInfo): ProblemError {
  const type = asProblem(answer)?.type;
  const slug = type?.startsWith(PROBLEM_BASE) ? type.slice(PROBLEM_BASE.length) : undefined;
  const bySlug = slug === undefined ? undefined : BY_SLUG[slug];
  const byStatus = BY_STATUS[answer.status] ?? (answer.status >= 500 ? ServerError : ProblemError);
  // A slug only counts with its own status: a 400 that says "in flight" is a 400.
  const Class = bySlug !== undefined && bySlug.prototype instanceof byStatus ? bySlug : byStatus;
  return new Class(answer, info);
}

/** A URI reference resolved against a base URL; as it is when either does not parse. */
function resolve(reference: string, base: string): string {
  try {
    return new URL(reference, base).href;
  } catch {
    return reference;
  }
}

function asProblem(answer: Answer): ProblemDocument | undefined {
  const contentType = answer.headers.get("content-type") ?? "";
  const b = answer.body;
  if (!/^application\/problem\+json\b/i.test(contentType) || typeof b !== "object" || b === null) return undefined;
  const p = b as Record<string, unknown>;
  return {
    ...p,
    type: typeof p["type"] === "string" ? p["type"] : "about:blank",
    title: typeof p["title"] === "string" ? p["title"] : reasonPhrase(answer.status),
    status: typeof p["status"] === "number" ? p["status"] : answer.status,
    ...(typeof p["detail"] === "string" ? { detail: p["detail"] } : {}),
  } as ProblemDocument;
}

function reasonPhrase(status: number): string {
  const phrases: Record<number, string> = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
    415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
  };
  return phrases[status] ?? `HTTP ${status}`;
}

function errorMessage(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message} (${cause.message})` : e.message;
  }
  return String(e);
}
