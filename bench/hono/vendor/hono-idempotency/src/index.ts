export type { IdempotencyErrorCode, ProblemDetail } from "./errors.js";
export { clampHttpStatus, IdempotencyErrors, problemResponse } from "./errors.js";
export { idempotency } from "./middleware.js";
export type {
	D1DatabaseLike,
	D1PreparedStatementLike,
	D1StoreOptions,
} from "./stores/cloudflare-d1.js";
export type { KVNamespaceLike, KVStoreOptions } from "./stores/cloudflare-kv.js";
export type {
	DurableObjectStorageLike,
	DurableObjectStoreOptions,
} from "./stores/durable-objects.js";
export type { MemoryStore, MemoryStoreOptions } from "./stores/memory.js";
export type { RedisClientLike, RedisStoreOptions } from "./stores/redis.js";
export type { IdempotencyStore } from "./stores/types.js";
export type {
	IdempotencyEnv,
	IdempotencyOptions,
	IdempotencyRecord,
	StoredResponse,
} from "./types.js";
export { RECORD_STATUS_COMPLETED, RECORD_STATUS_PROCESSING } from "./types.js";
