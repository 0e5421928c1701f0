//! The key's Durable Object as plain logic: every decision `KeyGate` takes about
//! its one key, over a synchronous [`SlotStore`] and an injected [`Clock`].
//!
//! The store is synchronous on purpose: the object's SQLite calls do not await,
//! so a method here that reads the slot, decides and writes it cannot be
//! interleaved with another request for the key. That is what makes admission a
//! check-and-set, and what lets a fake store in `cargo test` stand in for the
//! object's SQLite: the races below are host tests, not `wrangler dev` runs.
//!
//! The lease protects against a *dead* holder only. A live holder renews it
//! ([`Gate::renew`]) while its handler runs, so no lease length, however short,
//! lets a second request run while the first is still working.

use super::admission::{decide, Admission, Slot, SlotState};
use super::replay::StoredResponse;

/// Milliseconds since the Unix epoch.
pub trait Clock {
    fn now_ms(&self) -> i64;
}

/// The identity of a key's record: its scope (tenant, or tenant and subject),
/// the concrete route, and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub scope: String,
    pub route: String,
    pub key: String,
}

/// Everything the object keeps about its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotData {
    pub slot: Slot,
    /// The subject whose request executed (or is executing) the work.
    pub owner: String,
    pub created_at: i64,
    /// For a completed answer: whether its D1 record is known to be written.
    pub synced: bool,
    pub record: RecordKey,
}

/// A failure of the object's storage (SQLite), as text for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The object's storage: one slot, and the last fence the object issued.
/// Synchronous, see the module doc.
pub trait SlotStore {
    fn load(&self) -> StoreResult<Option<SlotData>>;
    fn save(&self, data: &SlotData) -> StoreResult<()>;
    /// Forgets the slot; the last fence stays.
    fn clear(&self) -> StoreResult<()>;
    /// The last fence the object issued (0 if none), for any of its keys: kept
    /// when a slot is cleared, gone only with the object's whole database.
    fn last_fence(&self) -> StoreResult<i64>;
    fn save_fence(&self, fence: i64) -> StoreResult<()>;
    /// When the slot's completed answer expires, if it holds one. A store can
    /// answer this without reading the answer's body (up to megabytes).
    fn answer_expiry(&self) -> StoreResult<Option<i64>> {
        Ok(self.load()?.and_then(|d| match d.slot.state {
            SlotState::Completed { expires_at, .. } => Some(expires_at),
            SlotState::Processing { .. } => None,
        }))
    }
}

impl<T: SlotStore + ?Sized> SlotStore for &T {
    fn load(&self) -> StoreResult<Option<SlotData>> {
        (**self).load()
    }
    fn save(&self, data: &SlotData) -> StoreResult<()> {
        (**self).save(data)
    }
    fn clear(&self) -> StoreResult<()> {
        (**self).clear()
    }
    fn last_fence(&self) -> StoreResult<i64> {
        (**self).last_fence()
    }
    fn save_fence(&self, fence: i64) -> StoreResult<()> {
        (**self).save_fence(fence)
    }
    fn answer_expiry(&self) -> StoreResult<Option<i64>> {
        (**self).answer_expiry()
    }
}

/// Fences per millisecond of the clock: a fence is a microsecond count, so the
/// clock alone moves it by a thousand every millisecond.
pub const FENCE_PER_MS: i64 = 1000;

/// How long an object keeps its last fence after issuing it before it may
/// drop its database: a fence issued after that is above it by the clock
/// alone, even if the object restarts on a machine whose clock is this much
/// behind.
pub const FENCE_HOLD_MS: i64 = 1000;

/// The fence of an execution admitted at `now_ms`, after `last` (see
/// [`Decision::Execute`]): above every fence issued before, by the stored last
/// one while the object keeps it, and by the clock once it has dropped it.
pub fn next_fence(last: i64, now_ms: i64) -> i64 {
    (last + 1).max(now_ms.saturating_mul(FENCE_PER_MS))
}

/// The earliest time (ms) an object whose last fence is `last` may drop its
/// database ([`FENCE_HOLD_MS`]).
pub fn may_vacate_at(last: i64) -> i64 {
    last / FENCE_PER_MS + 1 + FENCE_HOLD_MS
}

/// The lease tokens of the handlers running in this instance of the object (see
/// [`Gate::admit_with`]): a token is live from admission until its request ends,
/// however it ends (the guard's `Drop`), so a cancelled request is not live.
#[derive(Clone, Default)]
pub struct LiveHolders(std::rc::Rc<std::cell::RefCell<std::collections::HashSet<String>>>);

/// Keeps a token live while it exists.
pub struct LiveGuard {
    holders: LiveHolders,
    token: String,
}

impl LiveHolders {
    pub fn enter(&self, token: &str) -> LiveGuard {
        self.0.borrow_mut().insert(token.to_string());
        LiveGuard {
            holders: self.clone(),
            token: token.to_string(),
        }
    }

    /// No holder runs in this instance.
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.borrow().contains(token)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.holders.0.borrow_mut().remove(&self.token);
    }
}

/// A committed answer read back from the system of record (D1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub fingerprint: String,
    pub response: StoredResponse,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What to do with one request, decided atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the handler holding the lease `token`, written at `now`. After a
    /// `takeover` the dead holder may have committed: look for its record first.
    /// `fence` is above every fence any earlier execution of the key got —
    /// after a 5xx, a release, a takeover, a restart or the object's database
    /// dropped ([`next_fence`]) — so an origin can refuse an older attempt.
    Execute {
        token: String,
        now: i64,
        takeover: bool,
        fence: i64,
    },
    Replay {
        response: StoredResponse,
        expires_at: i64,
    },
    InFlight {
        lease_expires_at: i64,
    },
    Mismatch,
}

/// What a holder's attempt to make its answer final did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The answer is final in the slot (possibly replaced by the too-large problem).
    Stored(StoredResponse),
    /// The lease was no longer this holder's (taken over or released): nothing written.
    Superseded,
}

/// Who asks to release a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Releaser<'a> {
    pub sub: &'a str,
    pub admin: bool,
    /// The key's scope is the caller's own (tenant and subject): they own it by construction.
    pub own_scope: bool,
}

/// The answer to `DELETE /v1/idempotency/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The slot (if any) is cleared; the record must be deleted from D1 too.
    Released { had_slot: bool },
    /// A request holds a live lease: releasing now would let a second execution
    /// follow while the first still runs.
    InFlight { lease_expires_at: i64 },
    /// Neither the owner nor an admin.
    Forbidden,
}

/// What the alarm must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmStep {
    /// Nothing is stored: nothing to do.
    Idle,
    /// The slot is live: set the alarm again for then.
    Rearm(i64),
    /// A completed answer whose D1 record may be missing: write it, then re-arm
    /// for its expiry.
    Sync(Box<SlotData>),
    /// The holder of `token` is gone and its lease expired: look in D1 for an
    /// answer it committed, then [`Gate::settle_dead_holder`].
    CheckCommitted { token: String, record: RecordKey },
    /// The stored answer expired: the slot was cleared.
    Cleared,
}

/// The key's decisions. `lease_ms` bounds how long a *dead* holder blocks the
/// key; `max_answer_bytes` caps a stored answer.
pub struct Gate<S, C> {
    pub store: S,
    pub clock: C,
    pub lease_ms: i64,
    pub max_answer_bytes: usize,
}

impl<S: SlotStore, C: Clock> Gate<S, C> {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Reads the slot, decides, and writes the lease — one synchronous step.
    pub fn admit(
        &self,
        record: &RecordKey,
        fingerprint: &str,
        owner: &str,
        new_token: impl FnOnce() -> String,
    ) -> StoreResult<Decision> {
        self.admit_with(record, fingerprint, owner, new_token, |_| false)
    }

    /// [`Gate::admit`], knowing which lease tokens belong to handlers running in
    /// this very instance (`live`). A live holder's lease is never taken over,
    /// even if its renewal came late (a starved timer, a slow machine): it is
    /// renewed on the spot and the request is in flight. Only a holder that is
    /// gone — a previous instance's, or one whose request was cancelled — can
    /// lose its key to an expired lease.
    pub fn admit_with(
        &self,
        record: &RecordKey,
        fingerprint: &str,
        owner: &str,
        new_token: impl FnOnce() -> String,
        live: impl Fn(&str) -> bool,
    ) -> StoreResult<Decision> {
        let now = self.now();
        let current = self.store.load()?;
        if let Some(until) = self.renew_if_live(current.as_ref(), now, &live)? {
            return Ok(match &current {
                Some(d) if d.slot.fingerprint != fingerprint => Decision::Mismatch,
                _ => Decision::InFlight {
                    lease_expires_at: until,
                },
            });
        }
        Ok(
            match decide(current.as_ref().map(|d| &d.slot), fingerprint, now) {
                Admission::Execute { takeover } => {
                    let token = new_token();
                    let fence = next_fence(self.store.last_fence()?, now);
                    self.store.save_fence(fence)?;
                    self.store.save(&SlotData {
                        slot: Slot {
                            fingerprint: fingerprint.into(),
                            state: SlotState::Processing {
                                token: token.clone(),
                                lease_expires_at: now + self.lease_ms,
                            },
                        },
                        owner: owner.into(),
                        created_at: now,
                        synced: false,
                        record: record.clone(),
                    })?;
                    Decision::Execute {
                        token,
                        now,
                        takeover,
                        fence,
                    }
                }
                Admission::Replay {
                    response,
                    expires_at,
                } => Decision::Replay {
                    response,
                    expires_at,
                },
                Admission::InFlight { lease_expires_at } => Decision::InFlight { lease_expires_at },
                Admission::Mismatch => Decision::Mismatch,
            },
        )
    }

    /// The slot, if `token` holds its lease.
    fn held(&self, token: &str) -> StoreResult<Option<SlotData>> {
        Ok(self.store.load()?.filter(
            |d| matches!(&d.slot.state, SlotState::Processing { token: t, .. } if t == token),
        ))
    }

    pub fn holds(&self, token: &str) -> StoreResult<bool> {
        Ok(self.held(token)?.is_some())
    }

    /// Extends a live holder's lease to a full `lease_ms` from now; returns the
    /// new expiry, or `None` if `token` no longer holds the lease. A renewal
    /// never shortens a lease.
    pub fn renew(&self, token: &str) -> StoreResult<Option<i64>> {
        let Some(mut data) = self.held(token)? else {
            return Ok(None);
        };
        let until = self.now() + self.lease_ms;
        if let SlotState::Processing {
            lease_expires_at, ..
        } = &mut data.slot.state
        {
            if *lease_expires_at >= until {
                return Ok(Some(*lease_expires_at));
            }
            *lease_expires_at = until;
        }
        self.store.save(&data)?;
        Ok(Some(until))
    }

    /// Makes a holder's answer final until `expires_at` (`synced`: its D1 record
    /// is already committed). An answer over `max_answer_bytes` is replaced by
    /// the final `answer-too-large` problem `too_large`, so a retry never runs
    /// the work again and every caller gets the same answer.
    pub fn finish(
        &self,
        token: &str,
        response: StoredResponse,
        expires_at: i64,
        synced: bool,
        too_large: impl FnOnce(usize) -> StoredResponse,
    ) -> StoreResult<Finish> {
        let Some(data) = self.held(token)? else {
            return Ok(Finish::Superseded);
        };
        let response = self.bounded(response, too_large);
        self.store.save(&SlotData {
            slot: Slot {
                fingerprint: data.slot.fingerprint,
                state: SlotState::Completed {
                    response: response.clone(),
                    expires_at,
                },
            },
            synced,
            ..data
        })?;
        Ok(Finish::Stored(response))
    }

    /// The answer itself, or the too-large problem if it exceeds the cap.
    pub fn bounded(
        &self,
        response: StoredResponse,
        too_large: impl FnOnce(usize) -> StoredResponse,
    ) -> StoredResponse {
        if response.body.len() > self.max_answer_bytes {
            too_large(self.max_answer_bytes)
        } else {
            response
        }
    }

    /// Gives the lease up (5xx, a throw, a storage failure): a retry runs again.
    /// Returns false if `token` no longer held it (then nothing is touched).
    pub fn release(&self, token: &str) -> StoreResult<bool> {
        if self.held(token)?.is_none() {
            return Ok(false);
        }
        self.store.clear()?;
        Ok(true)
    }

    /// For a new instance of the object: a lease found in storage belongs to a
    /// holder of a previous instance, which no longer runs (the runtime never runs
    /// two instances of one object), so it is expired at once. Returns whether
    /// there was one.
    pub fn expire_dead_holder(&self) -> StoreResult<bool> {
        let Some(mut data) = self.store.load()? else {
            return Ok(false);
        };
        let SlotState::Processing {
            lease_expires_at, ..
        } = &mut data.slot.state
        else {
            return Ok(false);
        };
        *lease_expires_at = 0;
        self.store.save(&data)?;
        Ok(true)
    }

    /// Takes an answer found committed in D1 as the key's final answer.
    pub fn adopt(&self, record: &RecordKey, owner: &str, c: &Committed) -> StoreResult<()> {
        self.store.save(&SlotData {
            slot: Slot {
                fingerprint: c.fingerprint.clone(),
                state: SlotState::Completed {
                    response: c.response.clone(),
                    expires_at: c.expires_at,
                },
            },
            owner: owner.into(),
            created_at: c.created_at,
            synced: true,
            record: record.clone(),
        })
    }

    /// `DELETE` of the key: refused while a live lease is held, and to anyone
    /// but the key's owner or an admin. Knowing which holders are live in this instance (`live`, see
    /// [`Gate::admit_with`]): a live holder's key is never released, even if
    /// its renewal came late; its lease is renewed on the spot and the DELETE
    /// is refused as in flight.
    pub fn release_key(
        &self,
        who: &Releaser<'_>,
        live: impl Fn(&str) -> bool,
    ) -> StoreResult<Release> {
        let now = self.now();
        let current = self.store.load()?;
        if let Some(until) = self.renew_if_live(current.as_ref(), now, &live)? {
            return Ok(Release::InFlight {
                lease_expires_at: until,
            });
        }
        if let Some(d) = &current {
            if let SlotState::Processing {
                lease_expires_at, ..
            } = d.slot.state
            {
                if lease_expires_at > now {
                    return Ok(Release::InFlight { lease_expires_at });
                }
            }
            let live = !matches!(d.slot.state, SlotState::Completed { expires_at, .. } if expires_at <= now);
            if live && !(who.admin || who.own_scope || d.owner == who.sub) {
                return Ok(Release::Forbidden);
            }
        } else if !(who.admin || who.own_scope) {
            // Without a slot the owner is unknown (the record may still be in D1).
            return Ok(Release::Forbidden);
        }
        if current.is_some() {
            self.store.clear()?;
        }
        Ok(Release::Released {
            had_slot: current.is_some(),
        })
    }

    /// An expired lease whose holder is live in this instance: renewed now.
    /// Returns its new expiry, or `None` if the slot holds no such lease.
    fn renew_if_live(
        &self,
        current: Option<&SlotData>,
        now: i64,
        live: &impl Fn(&str) -> bool,
    ) -> StoreResult<Option<i64>> {
        let Some(SlotData {
            slot:
                Slot {
                    state:
                        SlotState::Processing {
                            token,
                            lease_expires_at,
                        },
                    ..
                },
            ..
        }) = current
        else {
            return Ok(None);
        };
        if *lease_expires_at > now || !live(token) {
            return Ok(None);
        }
        self.renew(token)
    }

    /// The alarm's first step (see [`AlarmStep`]).
    pub fn alarm(&self) -> StoreResult<AlarmStep> {
        self.alarm_with(|_| false)
    }

    /// [`Gate::alarm`], knowing which holders are live in this instance (see
    /// [`Gate::admit_with`]): a live holder's expired lease is renewed, never settled.
    pub fn alarm_with(&self, live: impl Fn(&str) -> bool) -> StoreResult<AlarmStep> {
        let now = self.now();
        let Some(data) = self.store.load()? else {
            return Ok(AlarmStep::Idle);
        };
        if let Some(until) = self.renew_if_live(Some(&data), now, &live)? {
            return Ok(AlarmStep::Rearm(until));
        }
        Ok(match &data.slot.state {
            SlotState::Processing {
                lease_expires_at, ..
            } if *lease_expires_at > now => AlarmStep::Rearm(*lease_expires_at),
            SlotState::Processing { token, .. } => AlarmStep::CheckCommitted {
                token: token.clone(),
                record: data.record.clone(),
            },
            SlotState::Completed { expires_at, .. } if *expires_at > now => {
                if data.synced {
                    AlarmStep::Rearm(*expires_at)
                } else {
                    AlarmStep::Sync(Box::new(data))
                }
            }
            SlotState::Completed { .. } => {
                self.store.clear()?;
                AlarmStep::Cleared
            }
        })
    }

    /// After looking in D1 for a dead holder's answer: adopt it, or clear the
    /// slot so the next request runs again. Does nothing if the slot changed
    /// meanwhile (a request took the key over, or the holder was alive after all
    /// and finished). Returns when the alarm should fire next, if at all.
    pub fn settle_dead_holder(
        &self,
        token: &str,
        committed: Option<&Committed>,
    ) -> StoreResult<Option<i64>> {
        let now = self.now();
        let Some(data) = self.held(token)? else {
            return Ok(None);
        };
        if let SlotState::Processing {
            lease_expires_at, ..
        } = data.slot.state
        {
            if lease_expires_at > now {
                return Ok(Some(lease_expires_at));
            }
        }
        match committed.filter(|c| c.expires_at > now) {
            Some(c) => {
                self.adopt(&data.record, &data.owner, c)?;
                Ok(Some(c.expires_at))
            }
            None => {
                self.store.clear()?;
                Ok(None)
            }
        }
    }

    /// Marks the completed answer's D1 record as written (if it is still the slot's answer).
    pub fn mark_synced(&self, expires_at: i64) -> StoreResult<()> {
        if let Some(mut d) = self.store.load()? {
            if matches!(d.slot.state, SlotState::Completed { expires_at: e, .. } if e == expires_at)
                && !d.synced
            {
                d.synced = true;
                self.store.save(&d)?;
            }
        }
        Ok(())
    }

    /// Whether the slot still holds the completed answer that expires at `expires_at`
    /// (false once the key was released or answered anew).
    pub fn still_answer(&self, expires_at: i64) -> StoreResult<bool> {
        Ok(self.store.answer_expiry()? == Some(expires_at))
    }
}

/// In-memory stand-ins for the object's SQLite and the clock, for host tests.
#[cfg(test)]
pub(crate) mod fakes {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// The object's SQLite, in memory.
    /// One slot and the object's last fence.
    #[derive(Default)]
    pub struct FakeSlots(pub RefCell<Option<SlotData>>, pub Cell<i64>);

    impl SlotStore for FakeSlots {
        fn load(&self) -> StoreResult<Option<SlotData>> {
            Ok(self.0.borrow().clone())
        }
        fn save(&self, data: &SlotData) -> StoreResult<()> {
            *self.0.borrow_mut() = Some(data.clone());
            Ok(())
        }
        fn clear(&self) -> StoreResult<()> {
            *self.0.borrow_mut() = None;
            Ok(())
        }
        fn last_fence(&self) -> StoreResult<i64> {
            Ok(self.1.get())
        }
        fn save_fence(&self, fence: i64) -> StoreResult<()> {
            self.1.set(fence);
            Ok(())
        }
    }

    /// A clock that moves only when a test moves it.
    pub struct FakeClock(pub Cell<i64>);

    impl Clock for &FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.get()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::{FakeClock, FakeSlots};
    use super::*;
    use std::cell::Cell;

    const LEASE: i64 = 2_000;
    const T0: i64 = 1_000_000;

    struct World {
        slots: FakeSlots,
        clock: FakeClock,
        tokens: Cell<u32>,
    }

    impl World {
        fn new() -> Self {
            World {
                slots: FakeSlots::default(),
                clock: FakeClock(Cell::new(T0)),
                tokens: Cell::new(0),
            }
        }
        fn gate(&self) -> Gate<&FakeSlots, &FakeClock> {
            Gate {
                store: &self.slots,
                clock: &self.clock,
                lease_ms: LEASE,
                max_answer_bytes: 1024,
            }
        }
        fn advance(&self, ms: i64) {
            self.clock.0.set(self.clock.0.get() + ms);
        }
        fn admit(&self, fp: &str) -> Decision {
            self.admit_as(fp, "alice")
        }
        fn admit_as(&self, fp: &str, owner: &str) -> Decision {
            self.gate()
                .admit(&rk(), fp, owner, || {
                    self.tokens.set(self.tokens.get() + 1);
                    format!("tok{}", self.tokens.get())
                })
                .unwrap()
        }
    }

    fn rk() -> RecordKey {
        RecordKey {
            scope: "acme:alice".into(),
            route: "POST /functions/v1/echo".into(),
            key: "k1".into(),
        }
    }

    fn answer(status: u16, body: &[u8]) -> StoredResponse {
        StoredResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_vec(),
        }
    }

    fn too_large(limit: usize) -> StoredResponse {
        answer(502, format!("too large: {limit}").as_bytes())
    }

    fn token_of(d: &Decision) -> String {
        match d {
            Decision::Execute { token, .. } => token.clone(),
            other => panic!("expected Execute, got {other:?}"),
        }
    }

    #[test]
    fn a_renewed_lease_keeps_a_live_holder_in_flight_past_its_first_expiry() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        // The handler runs for 5 s with a 2 s lease, renewing every ~2/3 s.
        for _ in 0..8 {
            w.advance(600);
            assert!(w.gate().renew(&t).unwrap().is_some());
            assert!(
                matches!(w.admit("A"), Decision::InFlight { .. }),
                "a second request must wait while the holder lives"
            );
        }
        assert_eq!(
            w.gate()
                .finish(&t, answer(200, b"one"), T0 + 99_999, false, too_large),
            Ok(Finish::Stored(answer(200, b"one")))
        );
        assert_eq!(
            w.admit("A"),
            Decision::Replay {
                response: answer(200, b"one"),
                expires_at: T0 + 99_999
            }
        );
    }

    #[test]
    fn an_unrenewed_lease_is_taken_over_after_it_expires() {
        let w = World::new();
        let dead = token_of(&w.admit("A"));
        w.advance(LEASE - 1);
        assert!(matches!(w.admit("A"), Decision::InFlight { .. }));
        w.advance(1);
        let d = w.admit("A");
        assert!(
            matches!(d, Decision::Execute { takeover: true, .. }),
            "{d:?}"
        );
        assert_ne!(token_of(&d), dead);
    }

    #[test]
    fn a_late_holder_cannot_finish_or_release_after_a_takeover() {
        let w = World::new();
        let late = token_of(&w.admit("A"));
        w.advance(LEASE);
        let new = token_of(&w.admit("A"));
        assert_eq!(w.gate().renew(&late), Ok(None));
        assert_eq!(
            w.gate()
                .finish(&late, answer(200, b"late"), T0 + 50_000, true, too_large),
            Ok(Finish::Superseded)
        );
        assert_eq!(w.gate().release(&late), Ok(false));
        assert!(w.gate().holds(&new).unwrap());
    }

    #[test]
    fn delete_of_a_key_in_flight_is_refused_and_the_holder_finishes() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        let who = Releaser {
            sub: "alice",
            admin: true,
            own_scope: true,
        };
        assert_eq!(
            w.gate().release_key(&who, |_| false),
            Ok(Release::InFlight {
                lease_expires_at: T0 + LEASE
            })
        );
        assert!(matches!(
            w.gate()
                .finish(&t, answer(201, b"x"), T0 + 10_000, true, too_large),
            Ok(Finish::Stored(_))
        ));
        assert!(matches!(w.admit("A"), Decision::Replay { .. }));
        assert_eq!(
            w.gate().release_key(&who, |_| false),
            Ok(Release::Released { had_slot: true })
        );
        assert!(matches!(
            w.admit("A"),
            Decision::Execute {
                takeover: false,
                ..
            }
        ));
    }

    fn fence_of(d: &Decision) -> i64 {
        match d {
            Decision::Execute { fence, .. } => *fence,
            other => panic!("expected Execute, got {other:?}"),
        }
    }

    #[test]
    fn every_execution_gets_a_fence_above_every_earlier_one_of_the_key() {
        let w = World::new();
        let who = Releaser {
            sub: "alice",
            admin: true,
            own_scope: true,
        };
        // The clock does not move between these steps (a Worker's clock
        // advances only across I/O): the stored last fence orders them.
        let first = w.admit("A");
        let mut fences = vec![fence_of(&first)];
        // A 5xx: the lease is released and the retry runs again.
        assert_eq!(w.gate().release(&token_of(&first)), Ok(true));
        let retry = w.admit("A");
        fences.push(fence_of(&retry));
        // Finished, released by DELETE, run again.
        w.gate()
            .finish(
                &token_of(&retry),
                answer(201, b"x"),
                T0 + 9_000,
                true,
                too_large,
            )
            .unwrap();
        assert!(matches!(
            w.gate().release_key(&who, |_| false),
            Ok(Release::Released { .. })
        ));
        let rerun = w.admit("A");
        fences.push(fence_of(&rerun));
        // A holder that died: taken over once its lease ran out.
        w.advance(LEASE);
        let takeover = w.admit("A");
        assert!(matches!(takeover, Decision::Execute { takeover: true, .. }));
        fences.push(fence_of(&takeover));
        // A new instance of the object (a restart): its holder is dead at once.
        assert_eq!(w.gate().expire_dead_holder(), Ok(true));
        fences.push(fence_of(&w.admit("A")));
        assert!(fences.windows(2).all(|p| p[0] < p[1]), "{fences:?}");
        // The object dropped its database (the last fence with it), no sooner
        // than `may_vacate_at`: the clock alone puts the next fence above.
        let last = *fences.last().unwrap();
        w.slots.0.replace(None);
        w.slots.1.set(0);
        w.clock.0.set(may_vacate_at(last));
        assert!(fence_of(&w.admit("A")) > last);
    }

    #[test]
    fn next_fence_follows_the_last_one_and_the_clock() {
        assert_eq!(next_fence(0, 5), 5_000);
        assert_eq!(next_fence(5_000, 5), 5_001);
        assert_eq!(next_fence(9_999, 5), 10_000);
        assert_eq!(next_fence(5_000, 7), 7_000);
        // A clock gone back: still above the last.
        assert_eq!(next_fence(7_000, 3), 7_001);
        // After the hold, a fence from the clock alone is above the last one.
        for last in [0, 1, 999, 1_000, 1_700_000_000_123_456] {
            assert!(next_fence(0, may_vacate_at(last) - FENCE_HOLD_MS) > last);
        }
        // Today's fences are exact in a JavaScript number (and a D1 REAL).
        assert!(next_fence(0, 4_102_444_800_000) < 1 << 53);
    }

    proptest::proptest! {
        #[test]
        fn fences_only_grow_whatever_happens_to_the_key(
            // Often no time at all between steps: a Worker's clock moves
            // only across I/O.
            steps in proptest::collection::vec(
                (0u8..8, proptest::prop_oneof![proptest::strategy::Just(0i64), 0i64..3_000]),
                1..60,
            ),
        ) {
            let w = World::new();
            let who = Releaser { sub: "alice", admin: true, own_scope: true };
            let mut issued: Vec<i64> = vec![];
            let mut held: Option<String> = None;
            for (step, ms) in steps {
                match step {
                    0 | 1 => {
                        let fp = if step == 0 { "A" } else { "B" };
                        if let Decision::Execute { token, fence, .. } = w.admit(fp) {
                            proptest::prop_assert!(issued.last().is_none_or(|l| *l < fence), "{issued:?} then {fence}");
                            issued.push(fence);
                            held = Some(token);
                        }
                    }
                    2 => if let Some(t) = held.take() {
                        let _ = w.gate().finish(&t, answer(201, b"x"), w.gate().now() + ms, true, too_large);
                    },
                    3 => if let Some(t) = held.take() { let _ = w.gate().release(&t); },
                    4 => { let _ = w.gate().release_key(&who, |_| false); }
                    5 => { let _ = w.gate().expire_dead_holder(); held = None; }
                    6 => { let _ = w.gate().alarm(); }
                    _ => {
                        // The object drops its database when it may: no slot,
                        // and the hold of its last fence over.
                        let empty = w.slots.0.borrow().is_none();
                        if empty && w.gate().now() >= may_vacate_at(w.slots.1.get()) {
                            w.slots.1.set(0);
                        }
                    }
                }
                w.advance(ms);
            }
        }
    }

    #[test]
    fn delete_never_supersedes_a_live_holder_whose_renewal_came_late() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        let holders = LiveHolders::default();
        let _running = holders.enter(&t);
        let live = |tok: &str| holders.contains(tok);
        let who = Releaser {
            sub: "alice",
            admin: true,
            own_scope: true,
        };
        // The renewal timer was starved: the lease has run out while the
        // handler still runs in this instance.
        w.advance(LEASE + 500);
        let refused = w.gate().release_key(&who, live);
        assert!(
            matches!(refused, Ok(Release::InFlight { lease_expires_at }) if lease_expires_at > w.gate().now()),
            "{refused:?}"
        );
        // The lease was renewed on the spot: no request takes the key over.
        assert!(matches!(
            w.gate()
                .admit_with(&rk(), "A", "alice", || "tok-x".into(), live),
            Ok(Decision::InFlight { .. })
        ));
        // The handler's answer stands, and it is the one every caller gets.
        assert_eq!(
            w.gate()
                .finish(&t, answer(201, b"once"), T0 + 99_000, true, too_large),
            Ok(Finish::Stored(answer(201, b"once")))
        );
        assert_eq!(
            w.admit("A"),
            Decision::Replay {
                response: answer(201, b"once"),
                expires_at: T0 + 99_000
            }
        );
        // A holder that is gone (not live) with an expired lease may be released.
        let w = World::new();
        token_of(&w.admit("A"));
        w.advance(LEASE + 500);
        assert_eq!(
            w.gate().release_key(&who, |_| false),
            Ok(Release::Released { had_slot: true })
        );
    }

    #[test]
    fn only_the_owner_or_an_admin_releases_a_tenant_scoped_key() {
        let w = World::new();
        let t = token_of(&w.admit_as("A", "alice"));
        w.gate()
            .finish(&t, answer(201, b"x"), T0 + 10_000, true, too_large)
            .unwrap();
        let bob = Releaser {
            sub: "bob",
            admin: false,
            own_scope: false,
        };
        assert_eq!(
            w.gate().release_key(&bob, |_| false),
            Ok(Release::Forbidden)
        );
        let alice = Releaser {
            sub: "alice",
            admin: false,
            own_scope: false,
        };
        assert_eq!(
            w.gate().release_key(&alice, |_| false),
            Ok(Release::Released { had_slot: true })
        );
    }

    #[test]
    fn a_5xx_releases_the_lease_and_the_retry_runs_fresh() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        assert!(matches!(w.admit("A"), Decision::InFlight { .. }));
        assert_eq!(w.gate().release(&t), Ok(true));
        assert!(matches!(
            w.admit("A"),
            Decision::Execute {
                takeover: false,
                ..
            }
        ));
    }

    #[test]
    fn an_oversize_answer_is_stored_as_the_final_too_large_problem() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        let big = vec![b'x'; 1025];
        let fin = w
            .gate()
            .finish(&t, answer(200, &big), T0 + 10_000, false, too_large)
            .unwrap();
        assert_eq!(fin, Finish::Stored(too_large(1024)));
        // A retry never runs the work again: it replays the problem.
        assert_eq!(
            w.admit("A"),
            Decision::Replay {
                response: too_large(1024),
                expires_at: T0 + 10_000
            }
        );
        // At the cap exactly, the answer itself is kept.
        let w = World::new();
        let t = token_of(&w.admit("A"));
        let fits = vec![b'y'; 1024];
        assert_eq!(
            w.gate()
                .finish(&t, answer(200, &fits), T0 + 10_000, false, too_large),
            Ok(Finish::Stored(answer(200, &fits)))
        );
    }

    #[test]
    fn the_alarm_adopts_an_answer_a_dead_holder_committed() {
        let w = World::new();
        let dead = token_of(&w.admit("A"));
        w.advance(LEASE + 1);
        assert_eq!(
            w.gate().alarm(),
            Ok(AlarmStep::CheckCommitted {
                token: dead.clone(),
                record: rk()
            })
        );
        let committed = Committed {
            fingerprint: "A".into(),
            response: answer(201, b"committed"),
            created_at: T0,
            expires_at: T0 + 60_000,
        };
        assert_eq!(
            w.gate().settle_dead_holder(&dead, Some(&committed)),
            Ok(Some(T0 + 60_000))
        );
        assert_eq!(
            w.admit("A"),
            Decision::Replay {
                response: answer(201, b"committed"),
                expires_at: T0 + 60_000
            }
        );
        assert_eq!(w.admit("B"), Decision::Mismatch);
    }

    #[test]
    fn the_alarm_clears_a_dead_holder_that_committed_nothing() {
        let w = World::new();
        let dead = token_of(&w.admit("A"));
        w.advance(LEASE + 1);
        assert_eq!(w.gate().settle_dead_holder(&dead, None), Ok(None));
        assert!(matches!(
            w.admit("A"),
            Decision::Execute {
                takeover: false,
                ..
            }
        ));
    }

    #[test]
    fn the_alarm_leaves_a_key_alone_that_changed_while_it_looked_in_d1() {
        let w = World::new();
        let dead = token_of(&w.admit("A"));
        w.advance(LEASE + 1);
        assert!(matches!(
            w.gate().alarm(),
            Ok(AlarmStep::CheckCommitted { .. })
        ));
        // While the alarm awaits D1, a request takes the key over.
        let live = token_of(&w.admit("A"));
        assert_eq!(w.gate().settle_dead_holder(&dead, None), Ok(None));
        assert!(w.gate().holds(&live).unwrap());
    }

    #[test]
    fn the_alarm_rearms_for_a_live_holder_and_never_clears_it() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        w.advance(LEASE / 2);
        let until = w.gate().renew(&t).unwrap().unwrap();
        w.advance(LEASE / 2 + 1);
        assert_eq!(w.gate().alarm(), Ok(AlarmStep::Rearm(until)));
        assert!(w.gate().holds(&t).unwrap());
    }

    #[test]
    fn an_expired_answer_is_cleared_by_the_alarm_and_the_key_is_new_again() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        w.gate()
            .finish(&t, answer(200, b"x"), T0 + 5_000, true, too_large)
            .unwrap();
        w.advance(4_999);
        assert_eq!(w.gate().alarm(), Ok(AlarmStep::Rearm(T0 + 5_000)));
        w.advance(1);
        assert_eq!(w.gate().alarm(), Ok(AlarmStep::Cleared));
        assert_eq!(w.gate().store.load(), Ok(None));
        assert!(matches!(
            w.admit("B"),
            Decision::Execute {
                takeover: false,
                ..
            }
        ));
    }

    #[test]
    fn an_unsynced_answer_is_synced_by_the_alarm_then_marked() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        w.gate()
            .finish(&t, answer(200, b"x"), T0 + 5_000, false, too_large)
            .unwrap();
        assert!(matches!(w.gate().alarm(), Ok(AlarmStep::Sync(_))));
        w.gate().mark_synced(T0 + 5_000).unwrap();
        assert_eq!(w.gate().alarm(), Ok(AlarmStep::Rearm(T0 + 5_000)));
        assert!(w.gate().still_answer(T0 + 5_000).unwrap());
        assert!(!w.gate().still_answer(T0 + 4_000).unwrap());
    }

    #[test]
    fn a_new_instance_expires_the_lease_of_the_previous_ones_holder_at_once() {
        let w = World::new();
        let dead = token_of(&w.admit("A"));
        // The instance died (a panic, a crash); a new one starts well within the lease.
        w.advance(100);
        assert_eq!(w.gate().expire_dead_holder(), Ok(true));
        let d = w.admit("A");
        assert!(
            matches!(d, Decision::Execute { takeover: true, .. }),
            "{d:?}"
        );
        assert_ne!(token_of(&d), dead);
        // A completed answer is left alone.
        let t = token_of(&d);
        w.gate()
            .finish(&t, answer(200, b"x"), T0 + 10_000, true, too_large)
            .unwrap();
        assert_eq!(w.gate().expire_dead_holder(), Ok(false));
        assert!(matches!(w.admit("A"), Decision::Replay { .. }));
    }

    #[test]
    fn a_live_holder_whose_renewal_came_late_is_never_taken_over() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        // Its renewal timer was starved: the lease ran out while it still works.
        w.advance(LEASE + 500);
        let live = |tok: &str| tok == t;
        let d = w
            .gate()
            .admit_with(&rk(), "A", "bob", || "intruder".into(), live)
            .unwrap();
        assert_eq!(
            d,
            Decision::InFlight {
                lease_expires_at: T0 + LEASE + 500 + LEASE
            }
        );
        assert!(w.gate().holds(&t).unwrap());
        // Another payload is still a mismatch, and the alarm renews rather than settles.
        assert_eq!(
            w.gate()
                .admit_with(&rk(), "B", "bob", || "intruder".into(), live)
                .unwrap(),
            Decision::Mismatch
        );
        w.advance(LEASE * 3);
        assert_eq!(
            w.gate().alarm_with(live),
            Ok(AlarmStep::Rearm(T0 + LEASE + 500 + LEASE * 3 + LEASE))
        );
        assert!(w.gate().holds(&t).unwrap());
        // Once it is gone from this instance, its expired lease is taken over.
        w.advance(LEASE);
        let d = w
            .gate()
            .admit_with(&rk(), "A", "bob", || "next".into(), |_| false)
            .unwrap();
        assert!(
            matches!(d, Decision::Execute { takeover: true, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn a_holder_is_live_exactly_while_its_guard_lives() {
        let live = LiveHolders::default();
        assert!(!live.contains("t1"));
        let g1 = live.enter("t1");
        let g2 = live.enter("t2");
        assert!(live.contains("t1") && live.contains("t2"));
        drop(g1);
        assert!(!live.contains("t1") && live.contains("t2"));
        drop(g2);
        assert!(!live.contains("t2"));
    }

    #[test]
    fn a_renewal_never_shortens_a_lease() {
        let w = World::new();
        let t = token_of(&w.admit("A"));
        assert_eq!(w.gate().renew(&t), Ok(Some(T0 + LEASE)));
        w.advance(10);
        assert_eq!(w.gate().renew(&t), Ok(Some(T0 + 10 + LEASE)));
    }
}
