// @idemgate/client: a fetch-based client for idemgate that retries right.
//
//   client.ts   IdemgateClient: one key per operation, the attempt loop
//   retry.ts    the policy, backoff with jitter, Retry-After parsing (pure)
//   errors.ts   one error class per kind of answer
//   openapi.ts  the API's request and response types, generated from openapi.json
//               by openapi-typescript (`npm run generate`; a test keeps it in sync)

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
  type ProblemDocument,
} from "./errors.js";
// Every schema of the OpenAPI document by its name (`Problem`, `Document`,
// `Export`, `KeyState`, …), and `paths`, `operations` and `components` for the rest.
export type * from "./openapi.js";
