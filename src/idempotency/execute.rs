//! Running a key's work under its lease: the handler, the commit of its rows and
//! of the answer's record to the system of record (D1), and what happens when
//! either fails — plain async code over [`Records`] and a handler closure, so a
//! late holder, a takeover or a lost race is a host test with fakes.
//!
//! The rules it keeps:
//! - after a takeover, an answer the dead holder committed is adopted, and the
//!   handler does not run;
//! - the record's insert fails whole if a live record exists, so a late holder
//!   can never commit a second answer: it adopts the first;
//! - a final answer (2xx–4xx) is stored; a 5xx, a throw or a storage failure
//!   releases the lease, so a retry runs again;
//! - a commit that lost an optimistic-concurrency race re-runs the handler on
//!   fresh state, at most [`CONFLICT_RETRIES`] times;
//! - an answer with no rows of its own is final once it is in the object's slot;
//!   its record is written behind it.

use super::admission::SlotState;
use super::gate::{
    AlarmStep, Clock, Committed, Finish, Gate, RecordKey, Release, Releaser, SlotStore,
};
use super::replay::StoredResponse;
use crate::config::AnswerTtl;
use std::fmt::Display;
use std::future::Future;

/// How often a handler is re-run after losing an optimistic-concurrency race.
pub const CONFLICT_RETRIES: u32 = 3;

/// What a handler produced. `W` are its storage writes, `A` work to do once after the commit.
pub enum Outcome<W, A> {
    /// A final answer (2xx/4xx) and the rows that go with it; both are committed
    /// together with the idempotency record.
    Commit {
        response: StoredResponse,
        writes: W,
        after: Option<A>,
    },
    /// A transient failure (5xx): the answer is not stored and the key is
    /// released, so a retry runs again. `writes` (e.g. recording that a delivery
    /// failed) are committed first; usually there are none.
    Release { response: StoredResponse, writes: W },
}

/// A failed commit.
#[derive(Debug)]
pub enum CommitError<E> {
    /// A uniqueness constraint: another request changed the same rows (or
    /// committed this key's record) first.
    Conflict(E),
    Other(E),
}

impl<E> CommitError<E> {
    pub fn into_inner(self) -> E {
        match self {
            CommitError::Conflict(e) | CommitError::Other(e) => e,
        }
    }
}

/// The answer's record, to commit with the handler's writes.
pub struct NewRecord<'a> {
    pub key: &'a RecordKey,
    pub fingerprint: &'a str,
    pub response: &'a StoredResponse,
    pub created_at: i64,
    pub completed_at: i64,
    pub expires_at: i64,
}

/// The system of record (D1), as the executor needs it.
#[allow(async_fn_in_trait)] // used with concrete types only, on one thread
pub trait Records {
    type Writes;
    type Error: Display;
    fn is_empty(writes: &Self::Writes) -> bool;
    /// The live record of a key at `now`.
    async fn find(&self, key: &RecordKey, now: i64) -> Result<Option<Committed>, Self::Error>;
    /// Commits `writes` and, if given, the record, in one transaction.
    async fn commit(
        &self,
        writes: Self::Writes,
        record: Option<NewRecord<'_>>,
    ) -> Result<(), CommitError<Self::Error>>;
    /// Writes (or replaces) a key's record: the write-behind of an answer that is
    /// already final in the key's object, the authority for its key.
    async fn upsert(&self, key: &RecordKey, record: &Committed) -> Result<(), Self::Error>;
    /// [`Records::upsert`] of many keys' records at once (a store may batch them).
    async fn upsert_many(&self, records: &[(RecordKey, Committed)]) -> Result<(), Self::Error> {
        for (key, record) in records {
            self.upsert(key, record).await?;
        }
        Ok(())
    }
    /// Deletes the key's record if it is the one that expires at `expires_at`.
    async fn take_back(&self, key: &RecordKey, expires_at: i64) -> Result<(), Self::Error>;
    /// Deletes the key's record; whether there was one.
    async fn delete(&self, key: &RecordKey) -> Result<bool, Self::Error>;
}

/// A key's state, as `GET /v1/idempotency/keys/{key}` shows it (serialized with
/// its `state`: `processing` or `completed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    Processing {
        fingerprint: String,
        created_at: i64,
        lease_expires_at: i64,
    },
    Completed {
        fingerprint: String,
        created_at: i64,
        response_status: u16,
        expires_at: i64,
    },
}

/// The answer to `DELETE /v1/idempotency/keys/{key}`, slot and record together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Released; whether anything (slot or record) was there.
    Done {
        existed: bool,
    },
    InFlight,
    Forbidden,
}

/// What the alarm did: when it must fire next, and a failure to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmDone {
    pub next: Option<i64>,
    pub error: Option<String>,
}

/// The lease a request holds, and what it runs for.
pub struct Held<'a> {
    pub key: &'a RecordKey,
    pub fingerprint: &'a str,
    pub token: &'a str,
    pub started: i64,
    pub takeover: bool,
    /// How long the answer is kept: its route's TTL, shorter for a 4xx.
    pub ttl: AnswerTtl,
    /// Commit through the system of record even without rows (test hooks).
    pub force_commit: bool,
}

/// How a run ended. Whatever it is, the lease is no longer held afterwards
/// (the answer is final in the slot, or the slot was released).
#[derive(Debug, PartialEq, Eq)]
pub enum Executed<A> {
    /// The handler's final answer, stored until `expires_at`. With `write_behind`
    /// its record is not in the system of record yet: the caller writes it.
    Stored {
        response: StoredResponse,
        expires_at: i64,
        after: Option<A>,
        write_behind: bool,
    },
    /// An answer another holder committed first (possibly for another payload).
    Adopted(Committed),
    /// A transient answer (5xx), not stored; the lease is released.
    Released(StoredResponse),
    /// The handler threw; the lease is released.
    Threw(String),
    /// Storage failed; the lease is released (best effort: else it expires).
    Failed(String),
}

impl<S: SlotStore, C: Clock> Gate<S, C> {
    /// Runs `handler` under the lease `held` and commits or releases (see the module doc).
    pub async fn run_held<R, A, E, F, Fut>(
        &self,
        held: &Held<'_>,
        records: &R,
        mut handler: F,
        too_large: impl Fn(usize) -> StoredResponse,
    ) -> Executed<A>
    where
        R: Records,
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Outcome<R::Writes, A>, E>>,
    {
        let failed = |e: String| {
            let _ = self.release(held.token);
            Executed::Failed(e)
        };
        if held.takeover {
            // The previous holder may have committed before it died.
            match records.find(held.key, held.started).await {
                Ok(Some(c)) => return self.adopt_held(held, c),
                Ok(None) => {}
                Err(e) => return failed(e.to_string()),
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (response, writes, after) = match handler().await {
                Err(e) => {
                    let _ = self.release(held.token);
                    return Executed::Threw(e.to_string());
                }
                Ok(Outcome::Commit {
                    response,
                    writes,
                    after,
                }) if response.is_storable() => (response, writes, after),
                Ok(Outcome::Commit { response, .. }) => return self.released(held, response),
                Ok(Outcome::Release { response, writes }) => {
                    if R::is_empty(&writes) {
                        return self.released(held, response);
                    }
                    match records.commit(writes, None).await {
                        Ok(()) => return self.released(held, response),
                        Err(CommitError::Conflict(_)) if attempt <= CONFLICT_RETRIES => continue,
                        Err(e) => return failed(e.into_inner().to_string()),
                    }
                }
            };
            // Above the cap the final answer is the too-large problem, for this
            // caller and every retry alike.
            let response = self.bounded(response, &too_large);
            let completed = self.now();
            // The slot and the D1 record get this same expiry.
            let expires_at = completed + held.ttl.for_status(response.status);
            if R::is_empty(&writes) && after.is_none() && !held.force_commit {
                // Write-behind: an answer with no rows of its own is final once it
                // is in the slot — durable, and the slot is the key's only writer.
                match self.finish(held.token, response.clone(), expires_at, false, &too_large) {
                    Ok(Finish::Stored(response)) => {
                        return Executed::Stored {
                            response,
                            expires_at,
                            after,
                            write_behind: true,
                        }
                    }
                    // The lease was lost: the system of record decides below.
                    Ok(Finish::Superseded) => {}
                    Err(e) => return failed(e.to_string()),
                }
            }
            let record = NewRecord {
                key: held.key,
                fingerprint: held.fingerprint,
                response: &response,
                created_at: held.started,
                completed_at: completed,
                expires_at,
            };
            match records.commit(writes, Some(record)).await {
                Ok(()) => {
                    // Superseded is fine: the record is committed, the slot's new
                    // holder will find it.
                    if let Err(e) =
                        self.finish(held.token, response.clone(), expires_at, true, &too_large)
                    {
                        return failed(e.to_string());
                    }
                    return Executed::Stored {
                        response,
                        expires_at,
                        after,
                        write_behind: false,
                    };
                }
                Err(e) => {
                    // A live record means another holder committed first: that is the answer.
                    let conflict = matches!(e, CommitError::Conflict(_));
                    match records.find(held.key, self.now()).await {
                        Ok(Some(c)) => return self.adopt_held(held, c),
                        Ok(None) if conflict && attempt <= CONFLICT_RETRIES => continue,
                        Ok(None) => return failed(e.into_inner().to_string()),
                        Err(found) => return failed(found.to_string()),
                    }
                }
            }
        }
    }

    fn released<A>(&self, held: &Held<'_>, response: StoredResponse) -> Executed<A> {
        match self.release(held.token) {
            Ok(_) => Executed::Released(response),
            Err(e) => Executed::Failed(e.to_string()),
        }
    }

    /// Adopts a committed answer; the slot keeps it if `held` still holds the lease.
    fn adopt_held<A>(&self, held: &Held<'_>, c: Committed) -> Executed<A> {
        let kept = self.store.load().map(|d| {
            d.filter(|d| {
                matches!(&d.slot.state, super::SlotState::Processing { token, .. } if token == held.token)
            })
        });
        match kept {
            Ok(Some(d)) => {
                if let Err(e) = self.adopt(held.key, &d.owner, &c) {
                    return Executed::Failed(e.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => return Executed::Failed(e.to_string()),
        }
        Executed::Adopted(c)
    }
}

impl<S: SlotStore, C: Clock> Gate<S, C> {
    /// The write-behind of a final answer: upsert its record, then — if the key
    /// was released (or answered anew) while the write was on its way, which
    /// deleted the record before this one landed — take this one back (only this
    /// one: a newer answer for the key has another expiry).
    pub async fn write_behind<R: Records>(
        &self,
        records: &R,
        key: &RecordKey,
        record: &Committed,
    ) -> Result<(), String> {
        records
            .upsert(key, record)
            .await
            .map_err(|e| e.to_string())?;
        if !self
            .still_answer(record.expires_at)
            .map_err(|e| e.to_string())?
        {
            records
                .take_back(key, record.expires_at)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The object's alarm: re-arm for a live lease or answer, write a record that
    /// did not land, settle a dead holder (adopting what it committed), clear an
    /// expired answer. `retry_ms`: how soon to come back after a D1 failure.
    pub async fn on_alarm<R: Records>(
        &self,
        records: &R,
        live: impl Fn(&str) -> bool,
        retry_ms: i64,
    ) -> AlarmDone {
        match self.alarm_with(live) {
            Ok(step) => self.settle_step(step, records, retry_ms).await,
            Err(e) => AlarmDone {
                next: Some(self.now() + retry_ms),
                error: Some(e.to_string()),
            },
        }
    }

    /// Does what an [`AlarmStep`] asks (see [`Gate::on_alarm`]).
    pub async fn settle_step<R: Records>(
        &self,
        step: AlarmStep,
        records: &R,
        retry_ms: i64,
    ) -> AlarmDone {
        let done = |next, error| AlarmDone { next, error };
        match step {
            AlarmStep::Idle | AlarmStep::Cleared => done(None, None),
            AlarmStep::Rearm(t) => done(Some(t), None),
            AlarmStep::Sync(data) => {
                let SlotState::Completed {
                    response,
                    expires_at,
                } = data.slot.state
                else {
                    return done(None, None);
                };
                let record = Committed {
                    fingerprint: data.slot.fingerprint,
                    response,
                    created_at: data.created_at,
                    expires_at,
                };
                let written = self.write_behind(records, &data.record, &record).await;
                match written.and_then(|()| self.mark_synced(expires_at).map_err(|e| e.to_string()))
                {
                    Ok(()) => done(Some(expires_at), None),
                    Err(e) => done(Some(self.now() + retry_ms), Some(e)),
                }
            }
            AlarmStep::CheckCommitted { token, record } => {
                match records.find(&record, self.now()).await {
                    Ok(found) => match self.settle_dead_holder(&token, found.as_ref()) {
                        Ok(next) => done(next, None),
                        Err(e) => done(Some(self.now() + retry_ms), Some(e.to_string())),
                    },
                    Err(e) => done(Some(self.now() + retry_ms), Some(e.to_string())),
                }
            }
        }
    }

    /// The key's state: the slot's while it is live, else its record's.
    pub async fn describe<R: Records>(
        &self,
        records: &R,
        key: &RecordKey,
    ) -> Result<Option<KeyState>, String> {
        let now = self.now();
        if let Some(d) = self.store.load().map_err(|e| e.to_string())? {
            match d.slot.state {
                SlotState::Processing {
                    lease_expires_at, ..
                } if lease_expires_at > now => {
                    return Ok(Some(KeyState::Processing {
                        fingerprint: d.slot.fingerprint,
                        created_at: d.created_at,
                        lease_expires_at,
                    }))
                }
                SlotState::Completed {
                    response,
                    expires_at,
                } if expires_at > now => {
                    return Ok(Some(KeyState::Completed {
                        fingerprint: d.slot.fingerprint,
                        created_at: d.created_at,
                        response_status: response.status,
                        expires_at,
                    }))
                }
                _ => {}
            }
        }
        let found = records.find(key, now).await.map_err(|e| e.to_string())?;
        Ok(found.map(|c| KeyState::Completed {
            fingerprint: c.fingerprint,
            created_at: c.created_at,
            response_status: c.response.status,
            expires_at: c.expires_at,
        }))
    }

    /// Releases the key — slot and record — unless it is in flight (a live
    /// holder of this instance, `live`, included) or `who` may not (see
    /// [`Gate::release_key`]).
    pub async fn release_everywhere<R: Records>(
        &self,
        records: &R,
        key: &RecordKey,
        who: &Releaser<'_>,
        live: impl Fn(&str) -> bool,
    ) -> Result<Released, String> {
        match self.release_key(who, live).map_err(|e| e.to_string())? {
            Release::InFlight { .. } => Ok(Released::InFlight),
            Release::Forbidden => Ok(Released::Forbidden),
            Release::Released { had_slot } => {
                let had_record = records.delete(key).await.map_err(|e| e.to_string())?;
                Ok(Released::Done {
                    existed: had_slot || had_record,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::gate::fakes::{FakeClock, FakeSlots};
    use crate::idempotency::gate::Decision;
    use crate::idempotency::SlotState;
    use futures_util::FutureExt;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// D1 in memory: committed records (primary key = the key, like
    /// `idempotency_records`), committed domain rows, and injected failures.
    #[derive(Default)]
    struct FakeRecords {
        records: RefCell<HashMap<String, Committed>>,
        rows: RefCell<Vec<String>>,
        /// Commits that fail with a conflict before succeeding.
        conflicts: Cell<u32>,
        broken: Cell<bool>,
    }

    impl Records for FakeRecords {
        type Writes = Vec<String>;
        type Error = String;
        fn is_empty(w: &Vec<String>) -> bool {
            w.is_empty()
        }
        async fn find(&self, key: &RecordKey, now: i64) -> Result<Option<Committed>, String> {
            if self.broken.get() {
                return Err("D1 down".into());
            }
            Ok(self
                .records
                .borrow()
                .get(&key.key)
                .filter(|c| c.expires_at > now)
                .cloned())
        }
        async fn commit(
            &self,
            writes: Vec<String>,
            record: Option<NewRecord<'_>>,
        ) -> Result<(), CommitError<String>> {
            if self.broken.get() {
                return Err(CommitError::Other("D1 down".into()));
            }
            if self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                return Err(CommitError::Conflict("version changed".into()));
            }
            if let Some(r) = &record {
                if self
                    .records
                    .borrow()
                    .get(&r.key.key)
                    .is_some_and(|c| c.expires_at > r.completed_at)
                {
                    return Err(CommitError::Conflict("UNIQUE constraint failed".into()));
                }
            }
            // One transaction: rows and record together.
            self.rows.borrow_mut().extend(writes);
            if let Some(r) = record {
                self.records.borrow_mut().insert(
                    r.key.key.clone(),
                    Committed {
                        fingerprint: r.fingerprint.into(),
                        response: r.response.clone(),
                        created_at: r.created_at,
                        expires_at: r.expires_at,
                    },
                );
            }
            Ok(())
        }
        async fn upsert(&self, key: &RecordKey, record: &Committed) -> Result<(), String> {
            if self.broken.get() {
                return Err("D1 down".into());
            }
            self.records
                .borrow_mut()
                .insert(key.key.clone(), record.clone());
            Ok(())
        }
        async fn take_back(&self, key: &RecordKey, expires_at: i64) -> Result<(), String> {
            let mut records = self.records.borrow_mut();
            if records
                .get(&key.key)
                .is_some_and(|c| c.expires_at == expires_at)
            {
                records.remove(&key.key);
            }
            Ok(())
        }
        async fn delete(&self, key: &RecordKey) -> Result<bool, String> {
            Ok(self.records.borrow_mut().remove(&key.key).is_some())
        }
    }

    const T0: i64 = 1_000_000;
    const LEASE: i64 = 2_000;
    const TTL: i64 = 60_000;
    const TTL_4XX: i64 = 5_000;

    struct World {
        slots: FakeSlots,
        clock: FakeClock,
        d1: FakeRecords,
        runs: Cell<u32>,
        tokens: Cell<u32>,
    }

    fn key() -> RecordKey {
        RecordKey {
            scope: "acme:alice".into(),
            route: "POST /v1/documents".into(),
            key: "k1".into(),
        }
    }

    fn answer(status: u16, body: &str) -> StoredResponse {
        StoredResponse {
            status,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    fn too_large(limit: usize) -> StoredResponse {
        answer(502, &format!("too large: {limit}"))
    }

    type Handled = std::result::Result<Outcome<Vec<String>, &'static str>, String>;

    impl World {
        fn new() -> Self {
            World {
                slots: FakeSlots::default(),
                clock: FakeClock(Cell::new(T0)),
                d1: FakeRecords::default(),
                runs: Cell::new(0),
                tokens: Cell::new(0),
            }
        }
        fn gate(&self) -> Gate<&FakeSlots, &FakeClock> {
            Gate {
                store: &self.slots,
                clock: &self.clock,
                lease_ms: LEASE,
                max_answer_bytes: 100,
            }
        }
        /// Admits a request for `fp` and returns its token and takeover flag.
        fn admit(&self, fp: &str) -> (String, bool) {
            match self
                .gate()
                .admit(&key(), fp, "alice", || {
                    self.tokens.set(self.tokens.get() + 1);
                    format!("tok{}", self.tokens.get())
                })
                .unwrap()
            {
                Decision::Execute {
                    token, takeover, ..
                } => (token, takeover),
                other => panic!("expected Execute, got {other:?}"),
            }
        }
        /// Runs `outcome` as the handler for a request holding `token`.
        fn run(
            &self,
            fp: &str,
            token: &str,
            takeover: bool,
            outcome: impl Fn(u32) -> Handled,
        ) -> Executed<&'static str> {
            let k = key();
            let held = Held {
                key: &k,
                fingerprint: fp,
                token,
                started: T0,
                takeover,
                ttl: AnswerTtl {
                    default_ms: TTL,
                    client_error_ms: TTL_4XX,
                },
                force_commit: false,
            };
            let handler = || {
                self.runs.set(self.runs.get() + 1);
                let out = outcome(self.runs.get());
                async move { out }
            };
            self.gate()
                .run_held(&held, &self.d1, handler, too_large)
                .now_or_never()
                .expect("the fakes never wait")
        }
        fn slot_answer(&self) -> Option<StoredResponse> {
            match self.slots.load().unwrap()?.slot.state {
                SlotState::Completed { response, .. } => Some(response),
                SlotState::Processing { .. } => None,
            }
        }
    }

    fn commit(body: &str, rows: &[&str]) -> Handled {
        Ok(Outcome::Commit {
            response: answer(201, body),
            writes: rows.iter().map(|r| r.to_string()).collect(),
            after: None,
        })
    }

    #[test]
    fn rows_and_record_commit_together_and_the_slot_keeps_the_answer() {
        let w = World::new();
        let (t, takeover) = w.admit("A");
        let got = w.run("A", &t, takeover, |_| commit("doc1", &["doc1"]));
        assert_eq!(
            got,
            Executed::Stored {
                response: answer(201, "doc1"),
                expires_at: T0 + TTL,
                after: None,
                write_behind: false
            }
        );
        assert_eq!(*w.d1.rows.borrow(), vec!["doc1".to_string()]);
        assert!(w.d1.records.borrow().contains_key("k1"));
        assert_eq!(w.slot_answer(), Some(answer(201, "doc1")));
    }

    /// What the key's object answers `fp` now: every isolate asks it (none
    /// keeps a copy), so this is every caller's answer.
    fn answer_now(w: &World, fp: &str) -> Decision {
        w.gate()
            .admit(&key(), fp, "alice", || "probe".to_string())
            .unwrap()
    }

    #[test]
    fn no_caller_gets_a_stale_answer_after_an_expiry_a_release_or_a_rerun_with_another_payload() {
        let owner = Releaser {
            sub: "alice",
            admin: false,
            own_scope: true,
        };
        // A 2xx under the route's TTL, a 4xx under the 4xx TTL: replayed up to
        // the last millisecond of its expiry, new from then on.
        for (status, ttl) in [(201, TTL), (422, TTL_4XX)] {
            let w = World::new();
            let (t, takeover) = w.admit("A");
            let body = format!("answer {status}");
            let got = w.run("A", &t, takeover, |_| {
                Ok(Outcome::Commit {
                    response: answer(status, &body),
                    writes: vec![],
                    after: None,
                })
            });
            assert!(matches!(got, Executed::Stored { expires_at, .. } if expires_at == T0 + ttl));
            w.clock.0.set(T0 + ttl - 1);
            assert!(
                matches!(answer_now(&w, "A"), Decision::Replay { ref response, .. } if *response == answer(status, &body))
            );
            assert_eq!(answer_now(&w, "B"), Decision::Mismatch);
            w.clock.0.set(T0 + ttl);
            assert!(matches!(
                answer_now(&w, "B"),
                Decision::Execute {
                    takeover: false,
                    ..
                }
            ));
        }
        // Released: the next request runs again at once; a re-run with another
        // payload makes that payload the key's, and the first one a 422.
        let w = World::new();
        let (t, takeover) = w.admit("A");
        w.run("A", &t, takeover, |_| commit("first", &[]));
        let released = w
            .gate()
            .release_everywhere(&w.d1, &key(), &owner, |_| false)
            .now_or_never()
            .unwrap();
        assert_eq!(released, Ok(Released::Done { existed: true }));
        let Decision::Execute { token, .. } = answer_now(&w, "B") else {
            panic!("a released key runs again");
        };
        w.run("B", &token, false, |_| commit("second", &[]));
        assert_eq!(answer_now(&w, "A"), Decision::Mismatch);
        assert!(
            matches!(answer_now(&w, "B"), Decision::Replay { ref response, .. } if *response == answer(201, "second"))
        );
    }

    #[test]
    fn a_4xx_answer_expires_sooner_in_the_slot_and_in_its_record_alike() {
        // With rows: the record is committed with the answer.
        let w = World::new();
        let (t, takeover) = w.admit("A");
        let rejected = |_| {
            Ok(Outcome::Commit {
                response: answer(422, "bad data"),
                writes: vec!["audit".to_string()],
                after: None,
            })
        };
        let got = w.run("A", &t, takeover, rejected);
        assert!(matches!(got, Executed::Stored { expires_at, .. } if expires_at == T0 + TTL_4XX));
        assert_eq!(w.d1.records.borrow()["k1"].expires_at, T0 + TTL_4XX);
        assert_eq!(w.slots.answer_expiry().unwrap(), Some(T0 + TTL_4XX));
        // Without rows: final in the slot, the record written behind with the same expiry.
        let w = World::new();
        let (t, takeover) = w.admit("A");
        let got = w.run("A", &t, takeover, |_| {
            Ok(Outcome::Commit {
                response: answer(404, "no such order"),
                writes: vec![],
                after: None,
            })
        });
        let Executed::Stored {
            expires_at,
            write_behind: true,
            response,
            ..
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!(expires_at, T0 + TTL_4XX);
        assert_eq!(w.slots.answer_expiry().unwrap(), Some(T0 + TTL_4XX));
        let record = Committed {
            fingerprint: "A".into(),
            response,
            created_at: T0,
            expires_at,
        };
        w.gate()
            .write_behind(&w.d1, &key(), &record)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(w.d1.records.borrow()["k1"].expires_at, T0 + TTL_4XX);
        // A 2xx keeps the route's TTL.
        let w = World::new();
        let (t, takeover) = w.admit("A");
        let got = w.run("A", &t, takeover, |_| commit("ok", &["row"]));
        assert!(matches!(got, Executed::Stored { expires_at, .. } if expires_at == T0 + TTL));
    }

    #[test]
    fn a_takeover_adopts_what_the_dead_holder_committed_without_running_the_handler() {
        let w = World::new();
        let (dead, _) = w.admit("A");
        // The dead holder committed, then died before its slot said so.
        w.d1.commit(
            vec!["doc-dead".into()],
            Some(NewRecord {
                key: &key(),
                fingerprint: "A",
                response: &answer(201, "doc-dead"),
                created_at: T0,
                completed_at: T0,
                expires_at: T0 + TTL,
            }),
        )
        .now_or_never()
        .unwrap()
        .unwrap();
        w.clock.0.set(T0 + LEASE);
        let (t, takeover) = w.admit("A");
        assert!(takeover && t != dead);
        let got = w.run("A", &t, takeover, |_| commit("doc-again", &["doc-again"]));
        assert!(matches!(&got, Executed::Adopted(c) if c.response == answer(201, "doc-dead")));
        assert_eq!(w.runs.get(), 0, "the handler must not run again");
        assert_eq!(*w.d1.rows.borrow(), vec!["doc-dead".to_string()]);
        assert_eq!(w.slot_answer(), Some(answer(201, "doc-dead")));
    }

    #[test]
    fn a_takeover_with_nothing_committed_runs_the_handler() {
        let w = World::new();
        w.admit("A");
        w.clock.0.set(T0 + LEASE);
        let (t, takeover) = w.admit("A");
        assert!(takeover);
        let got = w.run("A", &t, takeover, |_| commit("doc2", &["doc2"]));
        assert!(matches!(got, Executed::Stored { .. }));
        assert_eq!(w.runs.get(), 1);
    }

    #[test]
    fn a_late_holder_cannot_commit_a_second_answer_and_adopts_the_first() {
        let w = World::new();
        let (late, _) = w.admit("A");
        // Its lease was taken over and the new holder committed first.
        w.clock.0.set(T0 + LEASE);
        let (new, takeover) = w.admit("A");
        assert!(matches!(
            w.run("A", &new, takeover, |_| commit("first", &["row-first"])),
            Executed::Stored { .. }
        ));
        // The late holder finishes its handler now: its batch fails whole.
        let got = w.run("A", &late, false, |_| commit("late", &["row-late"]));
        assert!(matches!(&got, Executed::Adopted(c) if c.response == answer(201, "first")));
        assert_eq!(*w.d1.rows.borrow(), vec!["row-first".to_string()]);
        assert_eq!(w.slot_answer(), Some(answer(201, "first")));
    }

    #[test]
    fn a_5xx_is_not_stored_and_releases_the_key() {
        let w = World::new();
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| {
            Ok(Outcome::Commit {
                response: answer(503, "busy"),
                writes: vec!["row".into()],
                after: None,
            })
        });
        assert_eq!(got, Executed::Released(answer(503, "busy")));
        assert!(w.d1.rows.borrow().is_empty() && w.d1.records.borrow().is_empty());
        assert_eq!(w.slots.load().unwrap(), None);
    }

    #[test]
    fn a_release_commits_its_own_rows_and_stores_no_answer() {
        let w = World::new();
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| {
            Ok(Outcome::Release {
                response: answer(502, "delivery failed"),
                writes: vec!["attempt-1".into()],
            })
        });
        assert_eq!(got, Executed::Released(answer(502, "delivery failed")));
        assert_eq!(*w.d1.rows.borrow(), vec!["attempt-1".to_string()]);
        assert!(w.d1.records.borrow().is_empty());
        assert_eq!(w.slots.load().unwrap(), None);
    }

    #[test]
    fn a_throw_releases_the_key() {
        let w = World::new();
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| Err("boom".into()));
        assert_eq!(got, Executed::Threw("boom".into()));
        assert_eq!(w.slots.load().unwrap(), None);
    }

    #[test]
    fn a_lost_concurrency_race_reruns_the_handler_on_fresh_state() {
        let w = World::new();
        w.d1.conflicts.set(2);
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |n| commit(&format!("try{n}"), &["row"]));
        assert!(
            matches!(got, Executed::Stored { ref response, .. } if *response == answer(201, "try3"))
        );
        assert_eq!(w.runs.get(), 3);
    }

    #[test]
    fn endless_conflicts_give_up_and_release() {
        let w = World::new();
        w.d1.conflicts.set(100);
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| commit("x", &["row"]));
        assert!(matches!(got, Executed::Failed(_)), "{got:?}");
        assert_eq!(w.runs.get(), CONFLICT_RETRIES + 1);
        assert_eq!(w.slots.load().unwrap(), None);
    }

    #[test]
    fn a_storage_failure_releases_the_key_and_stores_nothing() {
        let w = World::new();
        w.d1.broken.set(true);
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| commit("x", &["row"]));
        assert!(matches!(got, Executed::Failed(_)));
        assert_eq!(w.slots.load().unwrap(), None);
        assert!(w.d1.rows.borrow().is_empty());
    }

    #[test]
    fn an_oversize_answer_is_committed_and_kept_as_the_too_large_problem() {
        let w = World::new();
        let (t, _) = w.admit("A");
        let big = "x".repeat(101);
        let got = w.run("A", &t, false, |_| commit(&big, &["row"]));
        assert!(
            matches!(got, Executed::Stored { ref response, .. } if *response == too_large(100))
        );
        assert_eq!(w.d1.records.borrow()["k1"].response, too_large(100));
        assert_eq!(w.slot_answer(), Some(too_large(100)));
    }

    #[test]
    fn an_answer_without_rows_is_final_in_the_slot_and_its_record_written_behind() {
        let w = World::new();
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| commit("origin says hi", &[]));
        assert!(matches!(
            got,
            Executed::Stored {
                write_behind: true,
                ..
            }
        ));
        assert!(
            w.d1.records.borrow().is_empty(),
            "the caller writes it behind"
        );
        assert_eq!(w.slot_answer(), Some(answer(201, "origin says hi")));
    }

    fn committed(fp: &str, body: &str, expires_at: i64) -> Committed {
        Committed {
            fingerprint: fp.into(),
            response: answer(201, body),
            created_at: T0,
            expires_at,
        }
    }

    fn now<T>(f: impl std::future::Future<Output = T>) -> T {
        f.now_or_never().expect("the fakes never wait")
    }

    #[test]
    fn a_record_written_behind_a_key_released_meanwhile_is_taken_back() {
        let w = World::new();
        let (t, _) = w.admit("A");
        let got = w.run("A", &t, false, |_| commit("hi", &[]));
        let Executed::Stored { expires_at, .. } = got else {
            panic!("{got:?}")
        };
        let record = committed("A", "hi", expires_at);
        // Written while the answer is the slot's: it stays.
        now(w.gate().write_behind(&w.d1, &key(), &record)).unwrap();
        assert!(w.d1.records.borrow().contains_key("k1"));
        // The key is released while a second write is on its way: taken back.
        w.slots.clear().unwrap();
        now(w.gate().write_behind(&w.d1, &key(), &record)).unwrap();
        assert!(!w.d1.records.borrow().contains_key("k1"));
    }

    #[test]
    fn the_alarm_writes_a_missing_record_and_retries_while_d1_is_down() {
        let w = World::new();
        let (t, _) = w.admit("A");
        w.run("A", &t, false, |_| commit("hi", &[]));
        w.d1.broken.set(true);
        let live = |_: &str| false;
        let done = now(w.gate().on_alarm(&w.d1, live, 30_000));
        assert_eq!(done.next, Some(T0 + 30_000));
        assert!(done.error.is_some());
        w.d1.broken.set(false);
        let done = now(w.gate().on_alarm(&w.d1, live, 30_000));
        assert_eq!(
            done,
            AlarmDone {
                next: Some(T0 + TTL),
                error: None
            }
        );
        assert_eq!(w.d1.records.borrow()["k1"].response, answer(201, "hi"));
        // Marked synced: the next alarm only waits for the expiry.
        assert_eq!(
            now(w.gate().on_alarm(&w.d1, live, 30_000)).next,
            Some(T0 + TTL)
        );
    }

    #[test]
    fn the_alarm_adopts_what_a_dead_holder_committed_and_clears_one_that_did_not() {
        let w = World::new();
        w.admit("A");
        now(w.d1.upsert(&key(), &committed("A", "dead's", T0 + TTL))).unwrap();
        w.clock.0.set(T0 + LEASE);
        let done = now(w.gate().on_alarm(&w.d1, |_| false, 30_000));
        assert_eq!(done.next, Some(T0 + TTL));
        assert_eq!(w.slot_answer(), Some(answer(201, "dead's")));

        let w = World::new();
        w.admit("A");
        w.clock.0.set(T0 + LEASE);
        let done = now(w.gate().on_alarm(&w.d1, |_| false, 30_000));
        assert_eq!(
            done,
            AlarmDone {
                next: None,
                error: None
            }
        );
        assert_eq!(w.slots.load().unwrap(), None);
    }

    #[test]
    fn the_state_comes_from_the_slot_then_from_the_record() {
        let w = World::new();
        assert_eq!(now(w.gate().describe(&w.d1, &key())), Ok(None));
        let (t, _) = w.admit("A");
        assert!(matches!(
            now(w.gate().describe(&w.d1, &key())),
            Ok(Some(KeyState::Processing { lease_expires_at, .. })) if lease_expires_at == T0 + LEASE
        ));
        w.run("A", &t, false, |_| commit("doc", &["row"]));
        // The slot is gone (e.g. a new object after a crash): the record answers.
        w.slots.clear().unwrap();
        assert_eq!(
            now(w.gate().describe(&w.d1, &key())),
            Ok(Some(KeyState::Completed {
                fingerprint: "A".into(),
                created_at: T0,
                response_status: 201,
                expires_at: T0 + TTL
            }))
        );
    }

    #[test]
    fn releasing_refuses_a_key_in_flight_and_removes_slot_and_record_after() {
        let w = World::new();
        let owner = Releaser {
            sub: "alice",
            admin: false,
            own_scope: true,
        };
        let (t, _) = w.admit("A");
        assert_eq!(
            now(w
                .gate()
                .release_everywhere(&w.d1, &key(), &owner, |_| false)),
            Ok(Released::InFlight)
        );
        w.run("A", &t, false, |_| commit("doc", &["row"]));
        assert_eq!(
            now(w
                .gate()
                .release_everywhere(&w.d1, &key(), &owner, |_| false)),
            Ok(Released::Done { existed: true })
        );
        assert!(w.d1.records.borrow().is_empty());
        assert_eq!(w.slots.load().unwrap(), None);
        assert_eq!(
            now(w
                .gate()
                .release_everywhere(&w.d1, &key(), &owner, |_| false)),
            Ok(Released::Done { existed: false })
        );
    }

    #[test]
    fn a_key_state_is_shown_with_its_state_name_and_its_fields() {
        let p = KeyState::Processing {
            fingerprint: "f".into(),
            created_at: 1,
            lease_expires_at: 2,
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"state": "processing", "fingerprint": "f", "created_at": 1,
                               "lease_expires_at": 2})
        );
        let c = KeyState::Completed {
            fingerprint: "f".into(),
            created_at: 1,
            response_status: 201,
            expires_at: 3,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"state": "completed", "fingerprint": "f", "created_at": 1,
                               "response_status": 201, "expires_at": 3})
        );
    }
}
