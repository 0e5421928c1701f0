//! Copies of a replay that Worker isolates keep for a short while
//! (`REPLAY_CACHE_MS`), and the release that waits for them to lapse.
//!
//! The key's object decides every answer. When it replays an answer to a Worker
//! that asks for a copy, it lends one: the Worker may answer the same request
//! (same key, same fingerprint) with that answer for `ms` milliseconds, counted
//! from just before it called the object, without calling it again
//! ([`IsolateCopies`]). The object remembers until when it lent each key's
//! answer ([`Lent`]), never past the answer's expiry. A release (`DELETE`)
//! takes effect only once every copy has lapsed: it waits until the latest
//! time lent — or, if this object instance has not lived that long, until
//! `ms` after it started, since an earlier instance may have lent copies — and
//! lends no copy while it waits. So once `DELETE` has answered, no isolate holds
//! the old answer; until then, every isolate and the object answer the same.

use std::collections::HashMap;

/// What the key's object has lent, per key name.
#[derive(Debug)]
pub struct Lent {
    /// How long a copy lives (`REPLAY_CACHE_MS`); 0 lends none.
    ms: i64,
    /// When this object instance started: copies an earlier instance lent
    /// lapse by `started_at + ms`.
    started_at: i64,
    /// The latest time each key's copies live until.
    until: HashMap<String, i64>,
    /// Releases waiting on each key: while any waits, no copy is lent.
    releasing: HashMap<String, u32>,
}

/// Keys remembered before the lapsed ones are dropped.
const LENT_KEYS: usize = 1024;

impl Lent {
    pub fn new(ms: i64, started_at: i64) -> Self {
        Lent {
            ms: ms.max(0),
            started_at,
            until: HashMap::new(),
            releasing: HashMap::new(),
        }
    }

    /// Lends a copy of key `name`'s answer, which expires at `expires_at`, at
    /// `now`: how long the copy may live, or `None` (copies off, a release
    /// waiting on the key, or the answer about to expire).
    pub fn lend(&mut self, name: &str, now: i64, expires_at: i64) -> Option<i64> {
        let ms = self.ms.min(expires_at - now);
        if ms <= 0 || self.releasing.contains_key(name) {
            return None;
        }
        if self.until.len() >= LENT_KEYS {
            self.until.retain(|_, until| *until > now);
        }
        let until = self.until.entry(name.to_string()).or_insert(now + ms);
        *until = (*until).max(now + ms);
        Some(ms)
    }

    /// When a release of key `name` may take effect: once every copy lent of
    /// it has lapsed, by this instance or an earlier one.
    pub fn release_at(&self, name: &str) -> i64 {
        if self.ms == 0 {
            return i64::MIN;
        }
        let lent = self.until.get(name).copied().unwrap_or(i64::MIN);
        lent.max(self.started_at + self.ms)
    }

    /// A release of key `name` starts waiting: no copy is lent until it ends.
    pub fn begin_release(&mut self, name: &str) {
        *self.releasing.entry(name.to_string()).or_default() += 1;
    }

    /// A release of key `name` has ended (whatever its outcome).
    pub fn end_release(&mut self, name: &str) {
        if let Some(n) = self.releasing.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.releasing.remove(name);
            }
        }
    }
}

/// A Worker isolate's copies of replays, by (tenant, key name, fingerprint).
#[derive(Debug)]
pub struct IsolateCopies<A> {
    /// Each copy with the time it lapses and its size.
    copies: HashMap<CopyKey, (A, f64, usize)>,
    /// The sizes of the copies held, summed.
    bytes: usize,
}

/// Which request a copy answers: the tenant and the key's name (which pick
/// the key's object) and the request's fingerprint.
pub type CopyKey = (String, String, String);

/// Copies kept at most per isolate.
pub const ISOLATE_COPIES: usize = 512;

/// The largest answer copied (its body), and the most an isolate holds in
/// copies: an isolate's memory is bounded (128 MB on Workers).
pub const COPY_MAX_BYTES: usize = 64 * 1024;
pub const ISOLATE_COPY_BYTES: usize = 4 * 1024 * 1024;

/// A copy lapses this long before the time lent, so that an isolate whose
/// clock reads a little behind (a Worker's clock moves only across I/O) never
/// uses it after the object released the key.
pub const CLOCK_MARGIN_MS: f64 = 50.0;

impl<A: Clone> Default for IsolateCopies<A> {
    fn default() -> Self {
        IsolateCopies {
            copies: HashMap::new(),
            bytes: 0,
        }
    }
}

impl<A: Clone> IsolateCopies<A> {
    /// The copy that answers `key` at `now`, if one lives.
    pub fn lookup(&mut self, key: &CopyKey, now: f64) -> Option<A> {
        match self.copies.get(key) {
            Some((answer, until, _)) if now < *until => Some(answer.clone()),
            Some(_) => {
                self.forget(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `answer` (`bytes` long), lent for `lent_ms` by an object called
    /// at `sent_at` (this isolate's clock, read before the call). An answer
    /// over [`COPY_MAX_BYTES`] is not kept; to stay within [`ISOLATE_COPIES`]
    /// and [`ISOLATE_COPY_BYTES`], lapsed copies go first, then all.
    pub fn keep(&mut self, key: CopyKey, answer: A, bytes: usize, sent_at: f64, lent_ms: i64) {
        let until = sent_at + lent_ms as f64 - CLOCK_MARGIN_MS;
        if until <= sent_at || bytes > COPY_MAX_BYTES {
            return;
        }
        self.forget(&key);
        let full =
            |c: &Self| c.copies.len() >= ISOLATE_COPIES || c.bytes + bytes > ISOLATE_COPY_BYTES;
        if full(self) {
            self.copies.retain(|_, (_, u, _)| *u > sent_at);
            self.bytes = self.copies.values().map(|(_, _, b)| b).sum();
            if full(self) {
                self.copies.clear();
                self.bytes = 0;
            }
        }
        self.bytes += bytes;
        self.copies.insert(key, (answer, until, bytes));
    }

    fn forget(&mut self, key: &CopyKey) {
        if let Some((_, _, bytes)) = self.copies.remove(key) {
            self.bytes -= bytes;
        }
    }

    /// The sizes of the copies held, summed.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.copies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000;

    fn key(fp: &str) -> CopyKey {
        ("obj".into(), "k1".into(), fp.into())
    }

    #[test]
    fn nothing_is_lent_when_copies_are_off_and_a_release_never_waits() {
        let mut lent = Lent::new(0, 0);
        assert_eq!(lent.lend("k1", 10, 1_000_000), None);
        assert_eq!(lent.release_at("k1"), i64::MIN);
    }

    #[test]
    fn a_copy_never_outlives_its_answer_nor_is_lent_while_a_release_waits() {
        let mut lent = Lent::new(MS, 0);
        assert_eq!(lent.lend("k1", 5_000, 5_300), Some(300));
        assert_eq!(lent.lend("k1", 5_300, 5_300), None);
        assert_eq!(lent.lend("k2", 5_000, 99_000), Some(MS));
        lent.begin_release("k2");
        lent.begin_release("k2");
        assert_eq!(lent.lend("k2", 5_100, 99_000), None);
        lent.end_release("k2");
        assert_eq!(
            lent.lend("k2", 5_100, 99_000),
            None,
            "one release still waits"
        );
        lent.end_release("k2");
        assert_eq!(lent.lend("k2", 5_200, 99_000), Some(MS));
        assert_eq!(lent.release_at("k2"), 6_200);
    }

    #[test]
    fn a_new_instance_waits_out_what_an_earlier_one_may_have_lent() {
        let lent = Lent::new(MS, 70_000);
        assert_eq!(lent.release_at("never-seen"), 71_000);
    }

    #[test]
    fn an_isolate_uses_a_copy_only_for_its_fingerprint_and_before_its_time() {
        let mut copies = IsolateCopies::default();
        copies.keep(key("A"), "answer", 6, 1_000.0, MS);
        assert_eq!(copies.lookup(&key("A"), 1_500.0), Some("answer"));
        assert_eq!(copies.lookup(&key("B"), 1_500.0), None);
        let last = 1_000.0 + MS as f64 - CLOCK_MARGIN_MS;
        assert_eq!(copies.lookup(&key("A"), last - 1.0), Some("answer"));
        assert_eq!(copies.lookup(&key("A"), last), None);
        assert!(copies.is_empty());
        // Lent too briefly to be worth the margin: not kept.
        copies.keep(key("A"), "answer", 6, 1_000.0, CLOCK_MARGIN_MS as i64);
        assert!(copies.is_empty());
    }

    #[test]
    fn an_isolate_keeps_a_bounded_number_of_copies() {
        let mut copies = IsolateCopies::default();
        for i in 0..ISOLATE_COPIES * 3 {
            copies.keep(key(&i.to_string()), i, 10, 0.0, MS);
            assert!(copies.len() <= ISOLATE_COPIES);
        }
    }

    #[test]
    fn an_isolate_keeps_a_bounded_number_of_bytes_and_no_large_answer() {
        let mut copies = IsolateCopies::default();
        copies.keep(key("big"), 0, COPY_MAX_BYTES + 1, 0.0, MS);
        assert!(
            copies.is_empty(),
            "an answer over COPY_MAX_BYTES is not copied"
        );
        for i in 0..ISOLATE_COPIES {
            copies.keep(key(&i.to_string()), i, COPY_MAX_BYTES, 0.0, MS);
            assert!(
                copies.bytes() <= ISOLATE_COPY_BYTES,
                "{} bytes kept",
                copies.bytes()
            );
        }
        // The copy kept last is there.
        let last = key(&(ISOLATE_COPIES - 1).to_string());
        assert_eq!(copies.lookup(&last, 1.0), Some(ISOLATE_COPIES - 1));
    }

    /// Several isolates with their own copies and clocks that read behind,
    /// one key's object (the real [`Gate`] over the test store) that lends,
    /// releases that wait, answers of any TTL, payloads that differ, restarts
    /// of the object: at every moment a copy is used, the object would have
    /// answered the same (a replay of that very answer), so no isolate ever
    /// serves an answer that expired, was released or belongs to another payload.
    mod coherence {
        use super::super::*;
        use crate::idempotency::gate::fakes::{FakeClock, FakeSlots};
        use crate::idempotency::gate::{Decision, Gate, RecordKey, Releaser};
        use crate::idempotency::{decide, Admission, StoredResponse};
        use std::cell::Cell;

        const MS: i64 = 1_000;
        const T0: i64 = 1_000_000;

        fn record() -> RecordKey {
            RecordKey {
                scope: "acme:alice".into(),
                route: "POST /functions/v1/echo".into(),
                key: "k1".into(),
            }
        }

        fn answer(n: u32) -> StoredResponse {
            StoredResponse {
                status: 200,
                headers: vec![],
                body: format!("run {n}").into_bytes(),
            }
        }

        proptest::proptest! {
            #[test]
            fn no_isolate_serves_what_the_object_would_not(
                steps in proptest::collection::vec(
                    // (what, isolate, payload, ms until the next step, hop
                    // latency, ttl, how far the isolate's clock reads behind)
                    (0u8..10, 0usize..3, proptest::bool::ANY, 0i64..700, 0i64..40, 1i64..3_000, 0i64..(CLOCK_MARGIN_MS as i64 - 10)),
                    1..120,
                ),
            ) {
                let slots = FakeSlots::default();
                let clock = FakeClock(Cell::new(T0));
                let gate = Gate { store: &slots, clock: &clock, lease_ms: 2_000, max_answer_bytes: 1 << 20 };
                let mut lent = Lent::new(MS, T0);
                let mut isolates: Vec<IsolateCopies<StoredResponse>> = (0..3).map(|_| IsolateCopies::default()).collect();
                // A release waiting: when it takes effect.
                let mut release: Option<i64> = None;
                let mut runs = 0u32;
                let name = record().name();
                let copy_key = |fp: &str| ("obj".to_string(), name.clone(), fp.to_string());
                let who = Releaser { sub: "alice", admin: true, own_scope: true };
                for (what, i, b, gap, hop, ttl, lag) in steps {
                    let now = clock.0.get();
                    if let Some(at) = release.filter(|at| *at <= now) {
                        let _ = gate.release_key(&who, |_| false);
                        lent.end_release(&name);
                        release = None;
                        let _ = at;
                    }
                    let fp = if b { "A" } else { "B" };
                    match what {
                        0 if release.is_none() => {
                            // DELETE: effective once every copy lapsed.
                            let at = lent.release_at(&name).max(now);
                            lent.begin_release(&name);
                            release = Some(at);
                        }
                        1 => {
                            // The object restarts: its memory is gone, and a
                            // release waiting in it dies with it (its caller
                            // gets an error and asks again).
                            lent = Lent::new(MS, now);
                            release = None;
                        }
                        _ => {
                            let local = (now - lag) as f64;
                            if let Some(copy) = isolates[i].lookup(&copy_key(fp), local) {
                                // What the object would answer at this moment.
                                let slot = slots.0.borrow().clone().map(|d| d.slot);
                                match decide(slot.as_ref(), fp, now) {
                                    Admission::Replay { response, .. } => proptest::prop_assert_eq!(response, copy),
                                    other => proptest::prop_assert!(false, "a copy served where the object decides {other:?}"),
                                }
                            } else {
                                // The call reaches the object a little later.
                                clock.0.set(now + hop);
                                let at_object = clock.0.get();
                                match gate.admit(&record(), fp, "alice", || "tok".into()).unwrap() {
                                    Decision::Execute { token, .. } => {
                                        runs += 1;
                                        let _ = gate.finish(&token, answer(runs), at_object + ttl, true, |_| answer(0));
                                    }
                                    Decision::Replay { response, expires_at } => {
                                        if let Some(ms) = lent.lend(&name, at_object, expires_at) {
                                            let bytes = response.body.len();
                                            isolates[i].keep(copy_key(fp), response, bytes, local, ms);
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                    }
                    clock.0.set(clock.0.get() + gap);
                }
            }
        }
    }
}
