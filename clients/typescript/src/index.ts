// @idemgate/client: a fetch-based client for idemgate that retries right.
//
//   client.ts   IdemgateClient: one key per operation, the attempt loop
//   retry.ts    the policy, backoff with jitter, Retry-After parsing (pure)
//   errors.ts   one error class per kind of answer

export {
  IdemgateClient,
  type ClientOptions,
  type FetchLike,
  type IdemResponse,
  type RequestOptions,
  type RetryEvent,
} from "./client.js";
export {
  DEFAULT_RETRY_POLICY,
  backoffDelayMs,
  parseHttpDate,
  parseRetryAfter,
  retryAfterDelayMs,
  type RetryPolicy,
} from "./retry.js";
export {
  BadRequestError,
  ConflictError,
  ForbiddenError,
  IdemgateError,
  InvalidKeyError,
  InvalidTransitionError,
  KeyInFlightError,
  KeyRequiredError,
  KeyReusedError,
  NetworkError,
  NotFoundError,
  PayloadTooLargeError,
  PROBLEM_BASE,
  ProblemError,
  RateLimitedError,
  RetriesExhaustedError,
  ServerError,
  ServiceUnavailableError,
  UnauthorizedError,
  UnprocessableError,
  problemError,
  type Answer,
  type OperationInfo,
  type Problem,
} from "./errors.js";
