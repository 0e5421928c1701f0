//! The idempotency contract (`docs/contract.md`) as plain logic: no `worker::` import here.
//!
//! - [`key`]: the `Idempotency-Key` header, parsed into [`IdempotencyKey`] at the edge.
//! - [`fingerprint`]: what makes two requests "the same" (method, route, canonical body).
//! - [`admission`]: the decision the Durable Object takes atomically for each request.
//! - [`copies`]: the short-lived copies of a replay that Worker isolates keep, and the release that waits for them.
//! - [`replay`]: which response headers are stored and replayed.
//! - [`gate`]: the key's object as plain logic over a synchronous slot store.
//! - [`execute`]: running the work under the lease and committing it, over a record store.
//! - [`memo`]: the object's write-through memory of its slots.
//! - [`mirror`]: records of answers without rows of their own, batched into D1.
//! - [`scope`]: whose key it is (tenant, subject), object names, forwarded keys.
//! - [`prefer`]: `Prefer: wait=N` (RFC 7240) for coalescing.
//! - [`waiting`]: the object's timing: a waiter's sleep, lease renewals, the alarm's move.

pub mod admission;
pub mod copies;
pub mod execute;
pub mod fingerprint;
pub mod gate;
pub mod key;
pub mod memo;
pub mod mirror;
pub mod prefer;
pub mod replay;
pub mod scope;
pub mod shard;
pub mod waiting;

pub use admission::{decide, Admission, Slot, SlotState};
pub use fingerprint::{canonical_json, Fingerprint};
pub use key::{key_from_headers, IdempotencyKey, KeyError};
pub use prefer::parse_prefer_wait;
pub use replay::{storable_headers, StoredResponse};
