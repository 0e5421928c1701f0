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

/// A keyed write's request as its fingerprint reads it
/// ([`Fingerprint::compute`](super::Fingerprint::compute)): whether its command
/// read the body as JSON, its `Content-Type` as sent, and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent<'a> {
    pub json: bool,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// A [`Sent`] kept with the answer it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub json: bool,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Request {
    fn of(sent: Sent<'_>) -> Self {
        Request {
            json: sent.json,
            content_type: sent.content_type.map(str::to_owned),
            body: sent.body.to_vec(),
        }
    }

    /// Whether `sent` is this request, as sent (the content type too, which a
    /// raw body's fingerprint reads; one written otherwise is hashed again).
    fn is(&self, sent: Sent<'_>) -> bool {
        self.json == sent.json
            && self.content_type.as_deref() == sent.content_type
            && self.body == sent.body
    }

    /// The bytes it holds against [`MAX_BYTES`].
    fn size(&self) -> usize {
        self.content_type.as_ref().map_or(0, String::len) + self.body.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub fingerprint: String,
    /// The request that got the answer, as sent. A retry that sends the same
    /// has the same fingerprint, known without computing it
    /// ([`ReplayCache::fingerprint_of`]).
    pub request: Option<Request>,
    pub response: StoredResponse,
    /// When the key's record expires (stated on every replay).
    pub expires_at: i64,
    /// ms since the epoch; the entry is dropped at this time.
    pub valid_until: i64,
}

impl Entry {
    /// The bytes an entry holds against [`MAX_BYTES`]: its answer's body and
    /// its request's.
    fn size(response: &StoredResponse, request: &Option<Request>) -> usize {
        response.body.len() + request.as_ref().map_or(0, Request::size)
    }

    fn bytes(&self) -> usize {
        Self::size(&self.response, &self.request)
    }
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

    /// Whether a lookup of `key` at `now` (ms) would find an entry, for
    /// either fingerprint: said without the request's body, which the
    /// fingerprint needs (so a caller reads a body only for a likely hit).
    pub fn holds(&self, key: &CacheKey, now: i64) -> bool {
        self.entries.get(key).is_some_and(|e| e.valid_until > now)
    }

    /// The fingerprint of a request to `key` that sends what the entry's
    /// request sent, if the entry is live at `now` (ms): the same method,
    /// route, content type and bytes, so the same fingerprint.
    pub fn fingerprint_of(&self, key: &CacheKey, sent: Sent<'_>, now: i64) -> Option<&str> {
        let entry = self.entries.get(key).filter(|e| e.valid_until > now)?;
        let request = entry.request.as_ref()?;
        request.is(sent).then_some(entry.fingerprint.as_str())
    }

    /// Keeps a final answer until `record_expires_at` (capped by [`MAX_AGE_MS`]),
    /// with the `request` that got it (kept only up to [`MAX_ENTRY_BYTES`]).
    pub fn insert(
        &mut self,
        key: CacheKey,
        fingerprint: String,
        request: Option<Sent<'_>>,
        response: StoredResponse,
        record_expires_at: i64,
        now: i64,
    ) {
        if response.body.len() > MAX_ENTRY_BYTES || record_expires_at <= now {
            return;
        }
        let request = request
            .filter(|sent| sent.body.len() <= MAX_ENTRY_BYTES)
            .map(Request::of);
        let size = Entry::size(&response, &request);
        self.remove(&key);
        while self.entries.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.bytes();
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        let valid_until = record_expires_at.min(now + MAX_AGE_MS);
        self.entries.insert(
            key,
            Entry {
                fingerprint,
                request,
                response,
                expires_at: record_expires_at,
                valid_until,
            },
        );
    }

    /// Forgets a key (its release).
    pub fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes();
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

    fn sent(json: bool, body: &[u8]) -> Sent<'_> {
        Sent {
            json,
            content_type: None,
            body,
        }
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
        c.insert(key("a"), "fp1".into(), None, resp("x"), 10_000, 0);
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
        c.insert(key("short"), "fp".into(), None, resp("x"), 500, 0);
        c.insert(key("long"), "fp".into(), None, resp("y"), 86_400_000, 0);
        assert!(c.get(&key("short"), "fp", 499).is_some());
        assert_eq!(c.get(&key("short"), "fp", 500), None);
        assert!(c.get(&key("long"), "fp", MAX_AGE_MS - 1).is_some());
        assert_eq!(c.get(&key("long"), "fp", MAX_AGE_MS), None);
        assert!(c.is_empty());
    }

    #[test]
    fn holds_says_what_a_lookup_would_find_for_either_payload() {
        let mut c = ReplayCache::default();
        c.insert(key("a"), "fp".into(), None, resp("x"), 500, 0);
        assert!(c.holds(&key("a"), 0));
        assert!(c.holds(&key("a"), 499));
        assert!(!c.holds(&key("a"), 500), "expired with the record");
        assert!(!c.holds(&key("b"), 0));
        c.insert(key("long"), "fp".into(), None, resp("y"), 86_400_000, 0);
        assert!(c.holds(&key("long"), MAX_AGE_MS - 1));
        assert!(!c.holds(&key("long"), MAX_AGE_MS), "past the max age");
        c.remove(&key("long"));
        assert!(!c.holds(&key("long"), 0), "released");
        for now in [0, 499, 500] {
            for fp in ["fp", "other"] {
                assert_eq!(c.holds(&key("a"), now), c.get(&key("a"), fp, now).is_some());
            }
        }
    }

    #[test]
    fn the_fingerprint_is_known_only_for_what_the_answers_request_sent() {
        let mut c = ReplayCache::default();
        c.insert(
            key("a"),
            "fp".into(),
            Some(sent(true, b"{\"x\":1}")),
            resp("r"),
            500,
            0,
        );
        assert_eq!(
            c.fingerprint_of(&key("a"), sent(true, b"{\"x\":1}"), 0),
            Some("fp")
        );
        // Any other body, even the same JSON spelled otherwise, is hashed.
        assert_eq!(
            c.fingerprint_of(&key("a"), sent(true, b"{ \"x\":1}"), 0),
            None
        );
        assert_eq!(
            c.fingerprint_of(&key("a"), sent(true, b"{\"x\":2}"), 0),
            None
        );
        assert_eq!(c.fingerprint_of(&key("a"), sent(true, b""), 0), None);
        // The same bytes read otherwise (not as JSON) are another request.
        assert_eq!(
            c.fingerprint_of(&key("a"), sent(false, b"{\"x\":1}"), 0),
            None
        );
        // Another key, an expired entry, an entry kept without its request.
        assert_eq!(
            c.fingerprint_of(&key("b"), sent(true, b"{\"x\":1}"), 0),
            None
        );
        assert_eq!(
            c.fingerprint_of(&key("a"), sent(true, b"{\"x\":1}"), 500),
            None
        );
        c.insert(key("n"), "fp".into(), None, resp("r"), 500, 0);
        assert_eq!(c.fingerprint_of(&key("n"), sent(true, b""), 0), None);
        // A request too large to keep is not kept.
        let big = vec![b'x'; MAX_ENTRY_BYTES + 1];
        c.insert(
            key("big"),
            "fp".into(),
            Some(sent(false, &big)),
            resp("r"),
            500,
            0,
        );
        assert!(c.holds(&key("big"), 0));
        assert_eq!(c.fingerprint_of(&key("big"), sent(false, &big), 0), None);
    }

    #[test]
    fn a_raw_request_under_another_content_type_is_hashed_again() {
        let mut c = ReplayCache::default();
        let plain = Sent {
            json: false,
            content_type: Some("text/plain"),
            body: b"hello",
        };
        c.insert(key("a"), "fp".into(), Some(plain), resp("r"), 500, 0);
        assert_eq!(c.fingerprint_of(&key("a"), plain, 0), Some("fp"));
        // The content type is part of a raw body's fingerprint: any other,
        // or the same written otherwise, or none, is hashed.
        for other in [
            Some("application/octet-stream"),
            Some("text/plain; charset=utf-8"),
            Some("TEXT/plain"),
            None,
        ] {
            let sent = Sent {
                content_type: other,
                ..plain
            };
            assert_eq!(c.fingerprint_of(&key("a"), sent, 0), None, "{other:?}");
        }
        // The kept content type counts against the memory bound.
        assert_eq!(c.bytes, "text/plain".len() + "hello".len() + "r".len());
    }

    #[test]
    fn a_kept_request_counts_against_the_memory_bound_and_leaves_with_its_entry() {
        let mut c = ReplayCache::default();
        c.insert(
            key("a"),
            "fp".into(),
            Some(sent(false, b"12345")),
            resp("xyz"),
            10_000,
            0,
        );
        assert_eq!(c.bytes, 8);
        c.insert(
            key("a"),
            "fp".into(),
            Some(sent(false, b"1")),
            resp("xyz"),
            10_000,
            0,
        );
        assert_eq!(c.bytes, 4, "a replaced entry's bytes leave with it");
        c.remove(&key("a"));
        assert_eq!(c.bytes, 0);
        // Requests fill the bound as answers do: the oldest entry goes first.
        let body = vec![b'b'; MAX_ENTRY_BYTES];
        let mut n = 0;
        while c.bytes + 2 * MAX_ENTRY_BYTES <= MAX_BYTES {
            c.insert(
                key(&n.to_string()),
                "fp".into(),
                Some(sent(false, &body)),
                resp(""),
                10_000,
                0,
            );
            n += 1;
        }
        let before = c.len();
        c.insert(
            key("last"),
            "fp".into(),
            Some(sent(false, &body)),
            StoredResponse {
                status: 200,
                headers: vec![],
                body: body.clone(),
            },
            10_000,
            0,
        );
        assert!(c.bytes <= MAX_BYTES);
        assert!(!c.holds(&key("0"), 0), "the oldest left to make room");
        assert!(c.len() <= before);
    }

    #[test]
    fn a_released_key_is_forgotten() {
        let mut c = ReplayCache::default();
        c.insert(key("a"), "fp".into(), None, resp("x"), 10_000, 0);
        c.remove(&key("a"));
        assert_eq!(c.get(&key("a"), "fp", 1), None);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut c = ReplayCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.insert(key(&i.to_string()), "fp".into(), None, resp("x"), 10_000, 0);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert_eq!(c.get(&key("0"), "fp", 1), None);
        assert!(c
            .get(&key(&(MAX_ENTRIES + 4).to_string()), "fp", 1)
            .is_some());
        let big = "b".repeat(MAX_ENTRY_BYTES + 1);
        c.insert(key("big"), "fp".into(), None, resp(&big), 10_000, 0);
        assert_eq!(c.get(&key("big"), "fp", 1), None);
    }

    #[test]
    fn reinserting_a_key_replaces_it() {
        let mut c = ReplayCache::default();
        c.insert(key("a"), "fp".into(), None, resp("old"), 10_000, 0);
        c.insert(key("a"), "fp".into(), None, resp("new!"), 10_000, 0);
        assert_eq!(
            c.get(&key("a"), "fp", 1),
            Some(Hit::Replay(&resp("new!"), 10_000))
        );
        assert_eq!((c.len(), c.bytes), (1, 4));
    }
}
