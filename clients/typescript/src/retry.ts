// When to try again and how long to wait: pure functions of their inputs (the
// clock and the random source are parameters), so they are tested without a server.

/** How hard the client tries before it gives up on one operation. */
export interface RetryPolicy {
  /** Attempts in all, the first included (default 8). 1 turns retries off. */
  maxAttempts: number;
  /** Total time for the operation, every attempt and wait included (default 30 000 ms). */
  deadlineMs: number;
  /** First backoff step when the server names no `Retry-After` (default 250 ms). */
  baseDelayMs: number;
  /** Largest backoff step (default 8 000 ms). A longer `Retry-After` is still honoured. */
  maxDelayMs: number;
  /** One attempt's limit, reading the body included (default 30 000 ms, never past the deadline). */
  attemptTimeoutMs: number;
  /**
   * 5xx statuses tried again with the same key (default 502, 503, 504: idemgate
   * stores nothing for them and releases the key). 409 and 429 have their own
   * rules and are not read from this list; a 4xx listed here is ignored.
   */
  retryStatuses: readonly number[];
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 8,
  deadlineMs: 30_000,
  baseDelayMs: 250,
  maxDelayMs: 8_000,
  attemptTimeoutMs: 30_000,
  retryStatuses: Object.freeze([502, 503, 504]),
});

/**
 * The wait before retry number `retry` (1 for the first retry) when the server
 * gave no `Retry-After`: "full jitter" — uniform in [0, min(max, base * 2^(retry-1))],
 * so many clients that failed together do not come back together.
 */
export function backoffDelayMs(
  retry: number,
  policy: Pick<RetryPolicy, "baseDelayMs" | "maxDelayMs">,
  random: () => number,
): number {
  const exponent = Math.min(Math.max(retry - 1, 0), 30);
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** exponent);
  return Math.floor(clampUnit(random()) * ceiling);
}

/**
 * The wait when the server named one: its `Retry-After` plus a little jitter
 * (up to a tenth of it, at most one base step) so the herd it sent away does not
 * return in the same millisecond. Never shorter than what the server asked.
 */
export function retryAfterDelayMs(
  retryAfterMs: number,
  policy: Pick<RetryPolicy, "baseDelayMs">,
  random: () => number,
): number {
  const spread = Math.min(retryAfterMs / 10, policy.baseDelayMs);
  return retryAfterMs + Math.floor(clampUnit(random()) * spread);
}

function clampUnit(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 1) : 0;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)";
const MONTH = `(?<month>${MONTHS.join("|")})`;
const TIME = "(?<h>\\d{2}):(?<mi>\\d{2}):(?<s>\\d{2})";
// RFC 9110 §5.6.7: the preferred IMF-fixdate and the two obsolete forms a recipient must accept.
const HTTP_DATES = [
  new RegExp(`^${DAY}, (?<day>\\d{2}) ${MONTH} (?<year>\\d{4}) ${TIME} GMT$`),
  new RegExp(`^${LONG_DAY}, (?<day>\\d{2})-${MONTH}-(?<yy>\\d{2}) ${TIME} GMT$`),
  new RegExp(`^${DAY} ${MONTH} (?<day>[ \\d]\\d) ${TIME} (?<year>\\d{4})$`),
];

/**
 * Parses an HTTP-date (RFC 9110 §5.6.7) to epoch milliseconds, or `undefined`.
 * Hand-written rather than `Date.parse`, which accepts almost anything
 * (`Date.parse("1.5")` is a day in 2001) and differs between runtimes.
 */
export function parseHttpDate(value: string, nowMs: number): number | undefined {
  const g = HTTP_DATES.map((re) => re.exec(value)?.groups).find((groups) => groups !== undefined);
  if (g === undefined) return undefined;
  const num = (name: string) => Number((g[name] ?? "").trim());
  let year = num("year");
  if (g["yy"] !== undefined) {
    // RFC 850's two-digit year: one more than 50 years ahead is in the past century.
    const thisYear = new Date(nowMs).getUTCFullYear();
    year = Math.floor(thisYear / 100) * 100 + num("yy");
    if (year > thisYear + 50) year -= 100;
  }
  const [day, h, mi, s] = [num("day"), num("h"), num("mi"), num("s")];
  if (day < 1 || h > 23 || mi > 59 || s > 60) return undefined;
  // A leap second (:60) is read as :59 of the same minute.
  const ms = Date.UTC(year, MONTHS.indexOf(g["month"] ?? ""), day, h, mi, Math.min(s, 59));
  // A day the month does not have (31 Feb) is malformed, not rolled over into March.
  if (new Date(ms).getUTCDate() !== day) return undefined;
  return ms;
}

/**
 * A `Retry-After` value (RFC 9110 §10.2.3) as a delay from `nowMs`, in ms:
 * delay-seconds (digits only) or an HTTP-date (a date in the past is 0).
 * `undefined` when absent or malformed — the caller falls back to its backoff.
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) {
    const seconds = Number(v);
    return Number.isSafeInteger(seconds * 1000) ? seconds * 1000 : Number.MAX_SAFE_INTEGER;
  }
  const at = parseHttpDate(v, nowMs);
  return at === undefined ? undefined : Math.max(0, at - nowMs);
}
