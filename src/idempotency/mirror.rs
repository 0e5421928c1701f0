//! The record mirror as plain logic: where answers that need no D1 rows of their
//! own (origin functions, stored 4xx) wait for D1, and how they get there in
//! batches — over a synchronous [`MirrorLog`] (the mirror object's SQLite) and
//! an async [`MirrorSink`] (D1), with an injected [`Clock`].
//!
//! A key's object hands its final answer's record to one of a few long-lived
//! mirror objects ([`mirror_of`]); the record is durable once [`Mirror::accept`]
//! has written it, so the key's object may forget it was ever unsent. The
//! mirror writes what it holds to D1 in one statement per [`MAX_ROWS`] records
//! ([`Mirror::flush`], from its alarm) and drops a record only once D1 has it.
//!
//! When to flush ([`Mirror::due`]): at once with [`FLUSH_AT`] records waiting;
//! else once no record has come for [`QUIET_MS`] (a lull: sparse traffic
//! reaches D1 within about a second), or the oldest has waited [`MAX_AGE_MS`]
//! (a steady stream too thin to fill a batch). So under a steady stream D1
//! sees at most `mirrors / MAX_AGE_MS + records / MAX_ROWS` statements a
//! second, and a thousand records cost about ten statements as soon as each
//! mirror receives more than `MAX_ROWS` records per `MAX_AGE_MS`.
//!
//! The rules it keeps:
//! - nothing is lost: a failed flush keeps every record and comes back after
//!   [`RETRY_MS`]; a crash loses only what was never acknowledged, which the
//!   key's object still sends again (its slot stays unsynced, its alarm retries);
//! - a key holds at most one waiting record, its newest (by `created_at`): a
//!   late copy of an older answer never replaces a newer one, here or in D1;
//! - a release never resurrects: [`Mirror::forget`] drops the key's waiting
//!   record and deletes it from D1 under the same lock as a flush, so no flush
//!   that read the record before can land after the delete.

use super::gate::{Clock, Committed, RecordKey, StoreResult};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::fmt::Display;

/// Records per D1 statement (one JSON parameter read with `json_each`).
pub const MAX_ROWS: usize = 100;
/// Bytes of records per statement: D1 takes a value of up to 2 MB.
pub const MAX_BATCH_BYTES: usize = 1_000_000;
/// A record bigger than this is written on its own (as several statements:
/// its body in chunks), never in a shared statement.
pub const MAX_SHARED_BYTES: usize = 256 * 1024;
/// A lull this long flushes what waits.
pub const QUIET_MS: i64 = 1_000;
/// No record waits longer than this (plus the flush itself) under a steady stream.
pub const MAX_AGE_MS: i64 = 10_000;
/// With this many records waiting, flush at once.
pub const FLUSH_AT: usize = MAX_ROWS;
/// How soon a failed flush is tried again.
pub const RETRY_MS: i64 = 1_000;
/// Statements one alarm issues at most before it yields (and comes back at once).
pub const MAX_STATEMENTS_PER_ALARM: u32 = 20;

/// A record as it travels to the mirror and into D1: the D1 row's columns,
/// with the body in base64 and the headers as their JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorEntry {
    pub scope: String,
    pub route: String,
    pub key: String,
    pub fingerprint: String,
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl MirrorEntry {
    pub fn new(key: &RecordKey, c: &Committed) -> Self {
        MirrorEntry {
            scope: key.scope.clone(),
            route: key.route.clone(),
            key: key.key.clone(),
            fingerprint: c.fingerprint.clone(),
            status: c.response.status,
            headers: serde_json::to_string(&c.response.headers).unwrap_or_else(|_| "[]".into()),
            body: B64.encode(&c.response.body),
            created_at: c.created_at,
            expires_at: c.expires_at,
        }
    }

    pub fn record_key(&self) -> RecordKey {
        RecordKey {
            scope: self.scope.clone(),
            route: self.route.clone(),
            key: self.key.clone(),
        }
    }

    /// About what the entry weighs in a statement's JSON parameter.
    pub fn weight(&self) -> usize {
        self.scope.len()
            + self.route.len()
            + self.key.len()
            + self.fingerprint.len()
            + self.headers.len() * 2
            + self.body.len()
            + 160
    }
}

/// Whether a record of `body_len` raw bytes travels through a mirror at all:
/// a bigger one is written to D1 by the key's object itself, as before (its
/// chunks would not fit the mirror's row).
pub fn mirrored(body_len: usize) -> bool {
    body_len * 4 / 3 + 4 <= MAX_SHARED_BYTES
}

/// The mirror object a key's records go through: one of `shards`, by key.
pub fn mirror_of(key: &RecordKey, shards: u32) -> u32 {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&key.scope, &key.route, &key.key] {
        for b in part.bytes().chain([0u8]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % shards.max(1) as u64) as u32
}

/// A waiting record and its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub seq: i64,
    pub entry: MirrorEntry,
}

/// The mirror object's storage. Synchronous, like the key's `SlotStore`.
pub trait MirrorLog {
    /// Keeps `entry` as its key's waiting record unless a newer one (by
    /// `created_at`) waits already. Returns whether it was kept.
    fn put(&self, entry: &MirrorEntry) -> StoreResult<bool>;
    /// Up to `limit` waiting records, oldest first.
    fn waiting(&self, limit: usize) -> StoreResult<Vec<Waiting>>;
    fn count(&self) -> StoreResult<usize>;
    /// Drops the records written to D1 — only these very ones: a record that
    /// replaced one of them meanwhile has another `seq` and stays. Adds
    /// `statements` to the count of D1 statements issued.
    fn written(&self, seqs: &[i64], statements: u32) -> StoreResult<()>;
    /// Drops the key's waiting record (only the one expiring at `expires_at`, if
    /// given); whether there was one.
    fn drop_key(&self, key: &RecordKey, expires_at: Option<i64>) -> StoreResult<bool>;
    /// D1 statements issued so far (for the test hook and capacity notes).
    fn statements(&self) -> StoreResult<u64>;
}

impl<T: MirrorLog + ?Sized> MirrorLog for &T {
    fn put(&self, entry: &MirrorEntry) -> StoreResult<bool> {
        (**self).put(entry)
    }
    fn waiting(&self, limit: usize) -> StoreResult<Vec<Waiting>> {
        (**self).waiting(limit)
    }
    fn count(&self) -> StoreResult<usize> {
        (**self).count()
    }
    fn written(&self, seqs: &[i64], statements: u32) -> StoreResult<()> {
        (**self).written(seqs, statements)
    }
    fn drop_key(&self, key: &RecordKey, expires_at: Option<i64>) -> StoreResult<bool> {
        (**self).drop_key(key, expires_at)
    }
    fn statements(&self) -> StoreResult<u64> {
        (**self).statements()
    }
}

/// D1, as the mirror needs it.
#[allow(async_fn_in_trait)] // used with concrete types only, on one thread
pub trait MirrorSink {
    type Error: Display;
    /// Upserts every entry in one statement (each keeps a newer record in place).
    async fn upsert_many(&self, entries: &[&MirrorEntry]) -> Result<(), Self::Error>;
    /// Upserts one big entry; how many statements that took.
    async fn upsert_one(&self, entry: &MirrorEntry) -> Result<u32, Self::Error>;
    /// Deletes the key's record (only the one expiring at `expires_at`, if
    /// given); whether there was one.
    async fn delete(&self, key: &RecordKey, expires_at: Option<i64>) -> Result<bool, Self::Error>;
}

/// One D1 write of a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// Small records, one statement.
    Shared(Vec<usize>),
    /// A big record on its own.
    Alone(usize),
}

/// Splits waiting records (indexes into `entries`) into D1 writes: shared
/// statements of at most `MAX_ROWS` records and `MAX_BATCH_BYTES`, and big
/// records alone. Order is kept within shared groups.
pub fn groups(entries: &[Waiting]) -> Vec<Group> {
    let mut out = Vec::new();
    let (mut current, mut bytes) = (Vec::new(), 0usize);
    for (i, w) in entries.iter().enumerate() {
        let weight = w.entry.weight();
        if weight > MAX_SHARED_BYTES {
            out.push(Group::Alone(i));
            continue;
        }
        if current.len() == MAX_ROWS || bytes + weight > MAX_BATCH_BYTES {
            out.push(Group::Shared(std::mem::take(&mut current)));
            bytes = 0;
        }
        current.push(i);
        bytes += weight;
    }
    if !current.is_empty() {
        out.push(Group::Shared(current));
    }
    out
}

/// What a flush did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flushed {
    /// Records now in D1.
    pub records: usize,
    /// D1 statements issued (failed ones included).
    pub statements: u32,
    /// When the alarm must come back: records still wait, or a write failed.
    pub next: Option<i64>,
    pub error: Option<String>,
}

/// When records arrived, as far as this instance of the mirror saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arrivals {
    /// The first record waiting since the last flush.
    pub first: Option<i64>,
    pub last: Option<i64>,
}

/// What the alarm must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Now,
    At(i64),
}

/// The mirror's decisions. `lock` serializes its D1 writes (flushes and
/// deletes): the object's other requests run while one awaits D1.
pub struct Mirror<'a, L, C> {
    pub log: L,
    pub clock: C,
    pub lock: &'a Mutex<()>,
    pub arrivals: &'a Cell<Arrivals>,
}

impl<L: MirrorLog, C: Clock> Mirror<'_, L, C> {
    /// Takes a record in (durable once this returns). Returns when the alarm
    /// must fire, if sooner than `armed` (the alarm already set, if any).
    pub fn accept(&self, entry: &MirrorEntry, armed: Option<i64>) -> StoreResult<Option<i64>> {
        self.accept_all(std::slice::from_ref(entry), armed)
    }

    /// [`Mirror::accept`] for a gate object's batch: each record put, then
    /// the waiting records counted once (the count only grows while they are
    /// put, so the last record's answer is the batch's).
    pub fn accept_all(
        &self,
        entries: &[MirrorEntry],
        armed: Option<i64>,
    ) -> StoreResult<Option<i64>> {
        if entries.is_empty() {
            return Ok(None);
        }
        for entry in entries {
            self.log.put(entry)?;
        }
        let now = self.clock.now_ms();
        let mut seen = self.arrivals.get();
        seen.first.get_or_insert(now);
        seen.last = Some(now);
        self.arrivals.set(seen);
        let due = if self.log.count()? >= FLUSH_AT {
            now
        } else {
            now + QUIET_MS
        };
        Ok(match armed {
            Some(at) if at <= due => None,
            _ => Some(due),
        })
    }

    /// At the alarm: flush now, or come back later (records still arriving,
    /// none waited long, no batch full). `None`: nothing waits.
    pub fn due(&self) -> StoreResult<Option<Due>> {
        let count = self.log.count()?;
        if count == 0 {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        let Arrivals {
            first: Some(first),
            last: Some(last),
        } = self.arrivals.get()
        else {
            // A new instance knows no arrival times: flush what the last one left.
            return Ok(Some(Due::Now));
        };
        let later = (last + QUIET_MS).min(first + MAX_AGE_MS);
        Ok(Some(if count >= FLUSH_AT || later <= now {
            Due::Now
        } else {
            Due::At(later)
        }))
    }

    /// Writes waiting records to D1, oldest first, at most
    /// [`MAX_STATEMENTS_PER_ALARM`] statements; drops each record once written.
    pub async fn flush<S: MirrorSink>(&self, sink: &S) -> Flushed {
        let _serial = self.lock.lock().await;
        let now = self.clock.now_ms();
        let seen = self.arrivals.get();
        // Flushed for a lull or an old record (or by a new instance, which knows
        // no arrival times): everything waiting is due. Flushed for a full
        // batch: full batches only, the few that came since wait their turn.
        let all_due = match seen {
            Arrivals {
                first: Some(first),
                last: Some(last),
            } => last + QUIET_MS <= now || first + MAX_AGE_MS <= now,
            _ => true,
        };
        // What is left waits from now on (it came moments ago).
        self.arrivals.set(Arrivals {
            first: (!all_due).then_some(now),
            last: seen.last,
        });
        let mut done = Flushed {
            records: 0,
            statements: 0,
            next: None,
            error: None,
        };
        let fail = |mut done: Flushed, e: String| {
            done.next = Some(self.clock.now_ms() + RETRY_MS);
            done.error = Some(e);
            done
        };
        // Everything waiting now is due; records that come during the flush
        // are written now only as full batches, else they wait their turn.
        let due = match self.log.count() {
            Ok(n) if all_due => n,
            Ok(n) => n / FLUSH_AT * FLUSH_AT,
            Err(e) => return fail(done, e.to_string()),
        };
        while done.statements < MAX_STATEMENTS_PER_ALARM {
            let waiting = match self.log.waiting(MAX_ROWS) {
                Ok(w) => w,
                Err(e) => return fail(done, e.to_string()),
            };
            if waiting.is_empty() || (done.records >= due && waiting.len() < FLUSH_AT) {
                break;
            }
            // A full batch: the first MAX_ROWS; the rest of what is due: all of it.
            let waiting = if done.records >= due {
                waiting
            } else {
                waiting.into_iter().take(due - done.records).collect()
            };
            for group in groups(&waiting) {
                let (seqs, statements) = match group {
                    Group::Shared(ix) => {
                        let entries: Vec<&MirrorEntry> =
                            ix.iter().map(|&i| &waiting[i].entry).collect();
                        done.statements += 1;
                        if let Err(e) = sink.upsert_many(&entries).await {
                            let _ = self.log.written(&[], 1);
                            return fail(done, e.to_string());
                        }
                        (ix.iter().map(|&i| waiting[i].seq).collect::<Vec<_>>(), 1)
                    }
                    Group::Alone(i) => match sink.upsert_one(&waiting[i].entry).await {
                        Ok(n) => {
                            done.statements += n;
                            (vec![waiting[i].seq], n)
                        }
                        Err(e) => {
                            done.statements += 1;
                            let _ = self.log.written(&[], 1);
                            return fail(done, e.to_string());
                        }
                    },
                };
                if let Err(e) = self.log.written(&seqs, statements) {
                    return fail(done, e.to_string());
                }
                done.records += seqs.len();
            }
        }
        // What is left: come back at once (more was due than one alarm writes),
        // or when the records that came meanwhile are due.
        done.next = match self.due() {
            Ok(Some(Due::Now)) => Some(self.clock.now_ms()),
            Ok(Some(Due::At(t))) => Some(t),
            Ok(None) => None,
            Err(e) => return fail(done, e.to_string()),
        };
        done
    }

    /// Forgets a key's record (a release, or a record written behind a key
    /// released meanwhile: only the one expiring at `expires_at`) here and in
    /// D1. Whether there was one, here or there.
    pub async fn forget<S: MirrorSink>(
        &self,
        sink: &S,
        key: &RecordKey,
        expires_at: Option<i64>,
    ) -> Result<bool, String> {
        // Under the flush lock: a flush that read the record is done before the
        // delete, and the record is gone before any later flush reads.
        let _serial = self.lock.lock().await;
        let waited = self
            .log
            .drop_key(key, expires_at)
            .map_err(|e| e.to_string())?;
        let stored = sink.delete(key, expires_at).await;
        let _ = self.log.written(&[], 1);
        Ok(stored.map_err(|e| e.to_string())? || waited)
    }
}

/// In-memory stand-ins for the mirror's SQLite and D1, for host tests.
#[cfg(test)]
pub(crate) mod fakes {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct FakeLog {
        pub rows: RefCell<BTreeMap<(String, String, String), Waiting>>,
        pub next_seq: Cell<i64>,
        pub statements: Cell<u64>,
        /// `count` calls (each a query on the object's SQLite).
        pub counts: Cell<u32>,
    }

    fn id(k: &RecordKey) -> (String, String, String) {
        (k.scope.clone(), k.route.clone(), k.key.clone())
    }

    impl MirrorLog for FakeLog {
        fn put(&self, entry: &MirrorEntry) -> StoreResult<bool> {
            let mut rows = self.rows.borrow_mut();
            let k = id(&entry.record_key());
            if rows
                .get(&k)
                .is_some_and(|w| w.entry.created_at > entry.created_at)
            {
                return Ok(false);
            }
            self.next_seq.set(self.next_seq.get() + 1);
            rows.insert(
                k,
                Waiting {
                    seq: self.next_seq.get(),
                    entry: entry.clone(),
                },
            );
            Ok(true)
        }
        fn waiting(&self, limit: usize) -> StoreResult<Vec<Waiting>> {
            let mut all: Vec<Waiting> = self.rows.borrow().values().cloned().collect();
            all.sort_by_key(|w| w.seq);
            all.truncate(limit);
            Ok(all)
        }
        fn count(&self) -> StoreResult<usize> {
            self.counts.set(self.counts.get() + 1);
            Ok(self.rows.borrow().len())
        }
        fn written(&self, seqs: &[i64], statements: u32) -> StoreResult<()> {
            self.rows.borrow_mut().retain(|_, w| !seqs.contains(&w.seq));
            self.statements
                .set(self.statements.get() + statements as u64);
            Ok(())
        }
        fn drop_key(&self, key: &RecordKey, expires_at: Option<i64>) -> StoreResult<bool> {
            let mut rows = self.rows.borrow_mut();
            let k = id(key);
            let hit = rows
                .get(&k)
                .is_some_and(|w| expires_at.is_none_or(|e| w.entry.expires_at == e));
            if hit {
                rows.remove(&k);
            }
            Ok(hit)
        }
        fn statements(&self) -> StoreResult<u64> {
            Ok(self.statements.get())
        }
    }

    /// D1's `idempotency_records`, keyed like it, with the upsert's newer-wins rule.
    #[derive(Default)]
    pub struct FakeD1 {
        pub records: RefCell<BTreeMap<(String, String, String), MirrorEntry>>,
        pub broken: Cell<bool>,
        pub statements: Cell<u32>,
        /// Writes that succeed before D1 breaks (None: no planned failure).
        pub writes_before_failing: Cell<Option<u32>>,
    }

    impl FakeD1 {
        fn land(&self, e: &MirrorEntry) {
            let mut r = self.records.borrow_mut();
            let k = id(&e.record_key());
            if r.get(&k).is_none_or(|old| e.created_at >= old.created_at) {
                r.insert(k, e.clone());
            }
        }
    }

    impl MirrorSink for FakeD1 {
        type Error = String;
        async fn upsert_many(&self, entries: &[&MirrorEntry]) -> Result<(), String> {
            self.statements.set(self.statements.get() + 1);
            match self.writes_before_failing.get() {
                Some(0) => self.broken.set(true),
                Some(n) => self.writes_before_failing.set(Some(n - 1)),
                None => {}
            }
            if self.broken.get() {
                return Err("D1 down".into());
            }
            for e in entries {
                self.land(e);
            }
            Ok(())
        }
        async fn upsert_one(&self, entry: &MirrorEntry) -> Result<u32, String> {
            self.statements.set(self.statements.get() + 3);
            if self.broken.get() {
                return Err("D1 down".into());
            }
            self.land(entry);
            Ok(3)
        }
        async fn delete(&self, key: &RecordKey, expires_at: Option<i64>) -> Result<bool, String> {
            self.statements.set(self.statements.get() + 1);
            if self.broken.get() {
                return Err("D1 down".into());
            }
            let mut r = self.records.borrow_mut();
            let k = id(key);
            let hit = r
                .get(&k)
                .is_some_and(|e| expires_at.is_none_or(|x| e.expires_at == x));
            if hit {
                r.remove(&k);
            }
            Ok(hit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::{FakeD1, FakeLog};
    use super::*;
    use crate::idempotency::gate::fakes::FakeClock;
    use crate::idempotency::StoredResponse;
    use futures_util::FutureExt;
    use std::cell::Cell;

    const T0: i64 = 1_000_000;

    struct World {
        log: FakeLog,
        d1: FakeD1,
        clock: FakeClock,
        lock: Mutex<()>,
        arrivals: Cell<Arrivals>,
    }

    impl World {
        fn new() -> Self {
            World {
                log: FakeLog::default(),
                d1: FakeD1::default(),
                clock: FakeClock(Cell::new(T0)),
                lock: Mutex::new(()),
                arrivals: Cell::new(Arrivals::default()),
            }
        }
        fn mirror(&self) -> Mirror<'_, &FakeLog, &FakeClock> {
            Mirror {
                log: &self.log,
                clock: &self.clock,
                lock: &self.lock,
                arrivals: &self.arrivals,
            }
        }
        fn advance(&self, ms: i64) {
            self.clock.0.set(self.clock.0.get() + ms);
        }
        /// The mirror's alarm: flush if due, else when to come back.
        fn alarm(&self) -> Option<Due> {
            let due = self.mirror().due().unwrap();
            if due == Some(Due::Now) {
                assert_eq!(self.flush_now().error, None);
            }
            due
        }
        /// A flush at the alarm after a lull: everything waiting is due.
        fn flush(&self) -> Flushed {
            self.advance(QUIET_MS);
            self.flush_now()
        }
        fn flush_now(&self) -> Flushed {
            self.mirror().flush(&self.d1).now_or_never().unwrap()
        }
        fn in_d1(&self, key: &str) -> Option<MirrorEntry> {
            self.d1
                .records
                .borrow()
                .values()
                .find(|e| e.key == key)
                .cloned()
        }
    }

    fn rk(key: &str) -> RecordKey {
        RecordKey {
            scope: "t1".into(),
            route: "POST /functions/v1/echo".into(),
            key: key.into(),
        }
    }

    fn entry(key: &str, body_len: usize, created_at: i64) -> MirrorEntry {
        MirrorEntry::new(
            &rk(key),
            &Committed {
                fingerprint: "fp".into(),
                response: StoredResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: vec![b'x'; body_len],
                },
                created_at,
                expires_at: created_at + 86_400_000,
            },
        )
    }

    /// `n` records arriving one every `every_ms` over `mirrors` mirrors (keys
    /// hashed as in production), each mirror's alarm firing when it asked to;
    /// returns the D1 statements issued.
    fn stream(n: usize, every_ms: i64, mirrors: u32) -> u32 {
        let worlds: Vec<World> = (0..mirrors).map(|_| World::new()).collect();
        let mut armed: Vec<Option<i64>> = vec![None; mirrors as usize];
        let fire_due = |armed: &mut Vec<Option<i64>>, now: i64| {
            for (w, a) in worlds.iter().zip(armed.iter_mut()) {
                while a.is_some_and(|at| at <= now) {
                    *a = match w.alarm() {
                        Some(Due::At(t)) => Some(t),
                        _ => None,
                    };
                }
            }
        };
        for i in 0..n {
            let e = entry(&format!("k{i}"), 200, T0);
            let m = mirror_of(&e.record_key(), mirrors) as usize;
            for w in &worlds {
                w.clock.0.set(T0 + i as i64 * every_ms);
            }
            fire_due(&mut armed, T0 + i as i64 * every_ms);
            if let Some(at) = worlds[m].mirror().accept(&e, armed[m]).unwrap() {
                armed[m] = Some(at);
            }
            fire_due(&mut armed, T0 + i as i64 * every_ms);
        }
        // The stream ends: the lull flushes the rest.
        for w in &worlds {
            w.advance(QUIET_MS);
        }
        let end = worlds[0].clock.0.get();
        fire_due(&mut armed, end);
        let mut statements = 0;
        let mut landed = 0;
        for w in &worlds {
            assert_eq!(w.log.count().unwrap(), 0);
            statements += w.d1.statements.get();
            assert_eq!(w.log.statements.get(), w.d1.statements.get() as u64);
            landed += w.d1.records.borrow().len();
        }
        assert_eq!(landed, n);
        statements
    }

    #[test]
    fn a_thousand_records_in_a_steady_stream_cost_at_most_twenty_statements() {
        // 25 records a second (a slow machine) to 10 000 a second.
        for every_ms in [40, 10, 1, 0] {
            let statements = stream(1000, every_ms, 2);
            assert!(
                statements <= 20,
                "{statements} statements at one record per {every_ms} ms"
            );
        }
        // At 100 a second a record still waits no more than MAX_AGE_MS.
        assert!(stream(1000, 10, 2) >= 10);
    }

    #[test]
    fn a_batch_is_accepted_as_its_records_one_by_one_with_one_count() {
        // Batches of every size around the flush threshold, onto a mirror
        // already holding some records, with and without an alarm armed, and
        // with a record replaced within the batch or older than the one held.
        for held in [0, 1, FLUSH_AT - 3, FLUSH_AT] {
            for size in [0, 1, 2, 3, FLUSH_AT - 1] {
                for armed in [
                    None,
                    Some(T0),
                    Some(T0 + QUIET_MS),
                    Some(T0 + 10 * QUIET_MS),
                ] {
                    let (one, all) = (World::new(), World::new());
                    for w in [&one, &all] {
                        for i in 0..held {
                            w.mirror()
                                .accept(&entry(&format!("h{i}"), 10, T0), None)
                                .unwrap();
                        }
                    }
                    let mut batch: Vec<MirrorEntry> = (0..size)
                        .map(|i| entry(&format!("b{i}"), 10, T0 + 1))
                        .collect();
                    if size > 1 {
                        batch.push(entry("b0", 10, T0 + 2));
                        batch.push(entry("h0", 10, T0 - 1));
                    }
                    let mut due = None;
                    for e in &batch {
                        if let Some(d) = one.mirror().accept(e, due.or(armed)).unwrap() {
                            due = Some(d);
                        }
                    }
                    all.log.counts.set(0);
                    let batched = all.mirror().accept_all(&batch, armed).unwrap();
                    let case = format!("held {held}, size {size}, armed {armed:?}");
                    assert_eq!(batched, due, "{case}");
                    assert_eq!(all.log.counts.get(), u32::from(size > 0), "{case}");
                    let rows = |w: &World| {
                        w.log
                            .rows
                            .borrow()
                            .values()
                            .map(|r| (r.seq, r.entry.clone()))
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(rows(&all), rows(&one), "{case}");
                    assert_eq!(all.arrivals.get(), one.arrivals.get(), "{case}");
                }
            }
        }
    }

    #[test]
    fn sparse_records_reach_d1_after_a_lull() {
        let w = World::new();
        let at = w.mirror().accept(&entry("a", 10, T0), None).unwrap();
        assert_eq!(at, Some(T0 + QUIET_MS));
        w.advance(QUIET_MS / 2);
        // Another record: the alarm already set stays (not pushed out per record).
        assert_eq!(
            w.mirror()
                .accept(&entry("b", 10, T0), Some(T0 + QUIET_MS))
                .unwrap(),
            None
        );
        w.advance(QUIET_MS / 2);
        // At the alarm the last record is only QUIET_MS / 2 old: come back after its lull.
        assert_eq!(w.alarm(), Some(Due::At(T0 + QUIET_MS / 2 + QUIET_MS)));
        w.advance(QUIET_MS / 2);
        assert_eq!(w.alarm(), Some(Due::Now));
        assert_eq!(w.d1.records.borrow().len(), 2);
        assert_eq!(w.d1.statements.get(), 1);
        assert_eq!(w.alarm(), None, "nothing waits");
    }

    #[test]
    fn a_steady_trickle_is_flushed_once_its_oldest_record_is_max_age_old() {
        let w = World::new();
        let mut i = 0;
        while w.clock.0.get() < T0 + MAX_AGE_MS {
            w.mirror()
                .accept(&entry(&format!("k{i}"), 10, T0), Some(T0))
                .unwrap();
            i += 1;
            w.advance(QUIET_MS / 2);
            if w.clock.0.get() < T0 + MAX_AGE_MS {
                assert_ne!(w.mirror().due().unwrap(), Some(Due::Now));
            }
        }
        assert_eq!(w.alarm(), Some(Due::Now));
        assert_eq!(w.d1.records.borrow().len(), i);
    }

    #[test]
    fn a_full_batch_arms_the_alarm_for_now_and_a_new_instance_flushes_what_it_finds() {
        let w = World::new();
        let m = w.mirror();
        for i in 0..FLUSH_AT - 1 {
            m.accept(&entry(&format!("k{i}"), 10, T0), Some(T0 + QUIET_MS))
                .unwrap();
        }
        assert_eq!(
            m.accept(&entry("last", 10, T0), Some(T0 + QUIET_MS))
                .unwrap(),
            Some(T0)
        );
        assert_eq!(m.due().unwrap(), Some(Due::Now));
        // After a restart the arrival times are unknown: flush at once.
        w.arrivals.set(Arrivals::default());
        assert_eq!(w.alarm(), Some(Due::Now));
        assert_eq!(w.d1.records.borrow().len(), FLUSH_AT);
    }

    #[test]
    fn a_flush_for_a_full_batch_leaves_the_few_that_came_since_to_wait_their_turn() {
        let w = World::new();
        for i in 0..FLUSH_AT + 3 {
            w.mirror()
                .accept(&entry(&format!("k{i}"), 10, T0), Some(T0))
                .unwrap();
        }
        w.advance(10);
        let done = w.flush_now();
        assert_eq!((done.records, done.statements), (FLUSH_AT, 1));
        assert_eq!(w.log.count().unwrap(), 3);
        // They are due after a lull, not at once.
        assert_eq!(done.next, Some(T0 + QUIET_MS));
        w.advance(QUIET_MS);
        assert_eq!(w.alarm(), Some(Due::Now));
        assert_eq!(w.d1.records.borrow().len(), FLUSH_AT + 3);
    }

    #[test]
    fn a_failed_flush_keeps_every_record_and_comes_back() {
        let w = World::new();
        for i in 0..150 {
            w.mirror()
                .accept(&entry(&format!("k{i}"), 10, T0), None)
                .unwrap();
        }
        w.d1.broken.set(true);
        let done = w.flush();
        assert_eq!(done.next, Some(T0 + QUIET_MS + RETRY_MS));
        assert!(done.error.is_some());
        assert_eq!(w.log.count().unwrap(), 150);
        w.d1.broken.set(false);
        let done = w.flush();
        assert_eq!((done.records, done.next, done.error), (150, None, None));
        assert_eq!(w.d1.records.borrow().len(), 150);
    }

    #[test]
    fn a_flush_failing_halfway_keeps_only_what_did_not_land() {
        let w = World::new();
        for i in 0..150 {
            w.mirror()
                .accept(&entry(&format!("k{i:03}"), 10, T0), None)
                .unwrap();
        }
        // The first statement lands, then D1 fails.
        w.d1.writes_before_failing.set(Some(1));
        let done = w.flush();
        assert!(done.error.is_some());
        assert_eq!(w.d1.records.borrow().len(), 100);
        assert_eq!(w.log.count().unwrap(), 50);
        w.d1.broken.set(false);
        w.d1.writes_before_failing.set(None);
        w.flush();
        assert_eq!(w.d1.records.borrow().len(), 150);
    }

    #[test]
    fn a_record_sent_twice_lands_once_and_an_older_copy_never_replaces_a_newer_answer() {
        let w = World::new();
        let m = w.mirror();
        m.accept(&entry("k", 10, T0), None).unwrap();
        m.accept(&entry("k", 10, T0), None).unwrap();
        assert_eq!(w.log.count().unwrap(), 1);
        // A newer answer for the key (after a release), then a late copy of the old one.
        let newer = entry("k", 20, T0 + 5_000);
        m.accept(&newer, None).unwrap();
        m.accept(&entry("k", 10, T0), None).unwrap();
        w.flush();
        assert_eq!(w.in_d1("k"), Some(newer.clone()));
        // Even when the old copy comes after the newer one has landed.
        m.accept(&entry("k", 10, T0), None).unwrap();
        w.flush();
        assert_eq!(w.in_d1("k"), Some(newer));
    }

    #[test]
    fn a_released_key_is_not_resurrected_by_a_waiting_record() {
        let w = World::new();
        w.mirror().accept(&entry("k", 10, T0), None).unwrap();
        let existed = w
            .mirror()
            .forget(&w.d1, &rk("k"), None)
            .now_or_never()
            .unwrap();
        assert_eq!(existed, Ok(true));
        w.flush();
        assert_eq!(w.in_d1("k"), None);
    }

    #[test]
    fn a_release_started_during_a_flush_runs_after_it() {
        use futures_util::task::noop_waker_ref;
        use std::future::Future;
        use std::task::{Context, Poll};
        let w = World::new();
        w.mirror().accept(&entry("k", 10, T0), None).unwrap();
        let m = w.mirror();
        // Hold the lock as a flush awaiting D1 would.
        let held = m.lock.try_lock().unwrap();
        let key = rk("k");
        let mut forget = Box::pin(m.forget(&w.d1, &key, None));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(forget.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            w.log.count().unwrap(),
            1,
            "nothing dropped while the flush runs"
        );
        drop(held);
        assert_eq!(forget.as_mut().poll(&mut cx), Poll::Ready(Ok(true)));
        assert_eq!(w.log.count().unwrap(), 0);
    }

    #[test]
    fn taking_back_one_answer_leaves_a_newer_one_for_the_key() {
        let w = World::new();
        let old = entry("k", 10, T0);
        let newer = entry("k", 10, T0 + 1);
        w.mirror().accept(&newer, None).unwrap();
        let took = w
            .mirror()
            .forget(&w.d1, &rk("k"), Some(old.expires_at))
            .now_or_never()
            .unwrap();
        assert_eq!(took, Ok(false));
        w.flush();
        assert_eq!(w.in_d1("k"), Some(newer));
    }

    #[test]
    fn big_records_are_written_alone_and_small_ones_share_statements() {
        let small = |k: &str| Waiting {
            seq: 0,
            entry: entry(k, 100, T0),
        };
        let big = Waiting {
            seq: 0,
            entry: entry("big", MAX_SHARED_BYTES, T0),
        };
        let mut entries: Vec<Waiting> = (0..150).map(|i| small(&format!("k{i}"))).collect();
        entries.insert(3, big);
        let g = groups(&entries);
        assert_eq!(g[0], Group::Alone(3));
        assert!(matches!(&g[1], Group::Shared(ix) if ix.len() == MAX_ROWS));
        assert!(matches!(&g[2], Group::Shared(ix) if ix.len() == 50));
        // Bytes bound a shared statement too.
        let heavy: Vec<Waiting> = (0..100)
            .map(|i| Waiting {
                seq: i,
                entry: entry(&format!("h{i}"), 150_000, T0),
            })
            .collect();
        for g in groups(&heavy) {
            let Group::Shared(ix) = g else { panic!() };
            let bytes: usize = ix.iter().map(|&i| heavy[i].entry.weight()).sum();
            assert!(bytes <= MAX_BATCH_BYTES);
        }
    }

    #[test]
    fn only_answers_small_enough_travel_through_a_mirror() {
        assert!(mirrored(0) && mirrored(100_000));
        assert!(!mirrored(MAX_SHARED_BYTES));
    }

    #[test]
    fn keys_spread_over_every_mirror_and_always_to_the_same_one() {
        let mut seen = [0u32; 8];
        for i in 0..800 {
            let k = rk(&format!("key-{i}"));
            let m = mirror_of(&k, 8);
            assert_eq!(m, mirror_of(&k, 8));
            seen[m as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(mirror_of(&rk("x"), 1), 0);
    }
}
