//! The Worker isolate's replay cache: finished answers kept in memory so that a
//! replay costs no Durable Object hop and no D1 read.
//!
//! Correctness: an entry is only ever a copy of an answer the key's object has
//! made final (executed or replayed), with its fingerprint, so a hit answers
//! exactly what the object would: the same stored answer, or 422 for another
//! payload. An entry lives until the record expires, but at most [`MAX_AGE_MS`]:
//! releasing a key (`DELETE /v1/idempotency/keys/…`) evicts it at once in the
//! isolate that handles the release, and other isolates see the release within
//! that bound. Memory is bounded by entry count and body bytes (oldest first out).

use super::replay::StoredResponse;
use std::collections::{HashMap, VecDeque};

/// Longest time an entry is trusted without asking the key's object.
pub const MAX_AGE_MS: i64 = 30_000;
pub const MAX_ENTRIES: usize = 10_000;
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Answers larger than this are not cached (they go to the object).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// `(scope, route, key)`.
pub type CacheKey = (String, String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fingerprint: String,
    pub response: StoredResponse,
    /// When the key's record expires (stated on every replay).
    pub expires_at: i64,
    /// ms since the epoch; the entry is dropped at this time.
    pub valid_until: i64,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit<'a> {
    /// The stored answer and when its record expires.
    Replay(&'a StoredResponse, i64),
    Mismatch,
}

#[derive(Default)]
pub struct ReplayCache {
    entries: HashMap<CacheKey, Entry>,
    order: VecDeque<CacheKey>,
    bytes: usize,
}

impl ReplayCache {
    /// Looks up a key for a request with `fingerprint` at `now` (ms).
    pub fn get(&mut self, key: &CacheKey, fingerprint: &str, now: i64) -> Option<Hit<'_>> {
        if self.entries.get(key).is_some_and(|e| e.valid_until <= now) {
            self.remove(key);
            return None;
        }
        let entry = self.entries.get(key)?;
        Some(if entry.fingerprint == fingerprint {
            Hit::Replay(&entry.response, entry.expires_at)
        } else {
            Hit::Mismatch
        })
    }

    /// Keeps a final answer until `record_expires_at` (capped by [`MAX_AGE_MS`]).
    pub fn insert(
        &mut self,
        key: CacheKey,
        fingerprint: String,
        response: StoredResponse,
        record_expires_at: i64,
        now: i64,
    ) {
        let size = response.body.len();
        if size > MAX_ENTRY_BYTES || record_expires_at <= now {
            return;
        }
        self.remove(&key);
        while self.entries.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.response.body.len();
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        let valid_until = record_expires_at.min(now + MAX_AGE_MS);
        self.entries.insert(
            key,
            Entry {
                fingerprint,
                response,
                expires_at: record_expires_at,
                valid_until,
            },
        );
    }

    /// Forgets a key (its release).
    pub fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.response.body.len();
            self.order.retain(|k| k != key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> CacheKey {
        ("t".into(), "POST /f".into(), k.into())
    }

    fn resp(body: &str) -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_cached_answer_replays_for_the_same_payload_and_mismatches_for_another() {
        let mut c = ReplayCache::default();
        c.insert(key("a"), "fp1".into(), resp("x"), 10_000, 0);
        assert_eq!(
            c.get(&key("a"), "fp1", 1),
            Some(Hit::Replay(&resp("x"), 10_000))
        );
        assert_eq!(c.get(&key("a"), "fp2", 1), Some(Hit::Mismatch));
        assert_eq!(c.get(&key("b"), "fp1", 1), None);
    }

    #[test]
    fn entries_expire_with_the_record_or_after_the_max_age() {
        let mut c = ReplayCache::default();
        c.insert(key("short"), "fp".into(), resp("x"), 500, 0);
        c.insert(key("long"), "fp".into(), resp("y"), 86_400_000, 0);
        assert!(c.get(&key("short"), "fp", 499).is_some());
        assert_eq!(c.get(&key("short"), "fp", 500), None);
        assert!(c.get(&key("long"), "fp", MAX_AGE_MS - 1).is_some());
        assert_eq!(c.get(&key("long"), "fp", MAX_AGE_MS), None);
        assert!(c.is_empty());
    }

    #[test]
    fn a_released_key_is_forgotten() {
        let mut c = ReplayCache::default();
        c.insert(key("a"), "fp".into(), resp("x"), 10_000, 0);
        c.remove(&key("a"));
        assert_eq!(c.get(&key("a"), "fp", 1), None);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut c = ReplayCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.insert(key(&i.to_string()), "fp".into(), resp("x"), 10_000, 0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert_eq!(c.get(&key("0"), "fp", 1), None);
        assert!(c
            .get(&key(&(MAX_ENTRIES + 4).to_string()), "fp", 1)
            .is_some());
        let big = "b".repeat(MAX_ENTRY_BYTES + 1);
        c.insert(key("big"), "fp".into(), resp(&big), 10_000, 0);
        assert_eq!(c.get(&key("big"), "fp", 1), None);
    }

    #[test]
    fn reinserting_a_key_replaces_it() {
        let mut c = ReplayCache::default();
        c.insert(key("a"), "fp".into(), resp("old"), 10_000, 0);
        c.insert(key("a"), "fp".into(), resp("new!"), 10_000, 0);
        assert_eq!(
            c.get(&key("a"), "fp", 1),
            Some(Hit::Replay(&resp("new!"), 10_000))
        );
        assert_eq!((c.len(), c.bytes), (1, 4));
    }
}
