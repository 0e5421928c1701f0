//! A gate object holding many keys: each key's [`Gate`] over its own slot in a
//! [`SlotTable`], and the one alarm the object has, shared by all of them.
//!
//! With `KEYGATE_SHARDS` = 0 an object holds one key (its table has one slot);
//! with N > 0 a tenant's keys are hashed into N long-lived objects, each still
//! serializing per key. Either way the object runs the same code: a slot per key
//! by name ([`RecordKey::name`]), and per slot the time its alarm is next due.
//! The object's alarm is the earliest of those; when it fires, every due slot
//! takes its own alarm step ([`Gate::on_alarm`]) and gets its next due time.

use super::execute::{AlarmDone, Records};
use super::gate::{AlarmStep, Clock, Committed, Gate, RecordKey, SlotStore, StoreResult};
use super::SlotState;

/// The object's storage: a slot per key name, each with the time its alarm is
/// next due. Synchronous, like [`SlotStore`].
pub trait SlotTable {
    type Slot: SlotStore;
    /// The slot of the key named `name` (empty if the object holds none).
    fn slot(&self, name: &str) -> Self::Slot;
    /// When the alarm must next look at `name`'s slot; nothing if it has none.
    fn set_due(&self, name: &str, at: i64) -> StoreResult<()>;
    /// Up to `limit` names whose due time is at or before `now`, earliest first.
    fn due(&self, now: i64, limit: usize) -> StoreResult<Vec<String>>;
    /// The earliest due time of any slot.
    fn next_due(&self) -> StoreResult<Option<i64>>;
    /// The names of the slots that hold a lease.
    fn leased(&self) -> StoreResult<Vec<String>>;
    /// No slot at all: the object may drop its database.
    fn is_empty(&self) -> StoreResult<bool>;
}

impl<T: SlotTable + ?Sized> SlotTable for &T {
    type Slot = T::Slot;
    fn slot(&self, name: &str) -> T::Slot {
        (**self).slot(name)
    }
    fn set_due(&self, name: &str, at: i64) -> StoreResult<()> {
        (**self).set_due(name, at)
    }
    fn due(&self, now: i64, limit: usize) -> StoreResult<Vec<String>> {
        (**self).due(now, limit)
    }
    fn next_due(&self) -> StoreResult<Option<i64>> {
        (**self).next_due()
    }
    fn leased(&self) -> StoreResult<Vec<String>> {
        (**self).leased()
    }
    fn is_empty(&self) -> StoreResult<bool> {
        (**self).is_empty()
    }
}

impl RecordKey {
    /// The key's name: its slot's in any gate object, and its own object's name
    /// when each key has one.
    pub fn name(&self) -> String {
        super::scope::object_name(&self.scope, &self.route, &self.key)
    }
}

/// How many due slots one alarm run settles; the rest get the next run, at once.
pub const ALARM_BATCH: usize = 100;
/// The answer bytes one alarm run holds for a hand-over: answers may be up to
/// `MAX_STORED_ANSWER_BYTES` each, and a hundred of them at once would not fit
/// an isolate's memory. The run stops collecting past this; the rest are still
/// due, so the next run comes at once.
pub const ALARM_BATCH_BYTES: usize = 16 << 20;

/// The object's keys, their decisions and their shared alarm.
pub struct Shard<T, C> {
    pub table: T,
    pub clock: C,
    pub lease_ms: i64,
    pub max_answer_bytes: usize,
}

impl<T: SlotTable, C: Clock + Copy> Shard<T, C> {
    /// The decisions of the key named `name`.
    pub fn gate(&self, name: &str) -> Gate<T::Slot, C> {
        Gate {
            store: self.table.slot(name),
            clock: self.clock,
            lease_ms: self.lease_ms,
            max_answer_bytes: self.max_answer_bytes,
        }
    }

    /// For a new instance of the object: every lease in the table is a dead
    /// holder's (the runtime never runs two instances of one object), so each is
    /// expired — the next request for its key takes over at once — and due now,
    /// so the next alarm run settles it even if no request comes. Returns how
    /// many there were.
    pub fn expire_dead_holders(&self) -> StoreResult<usize> {
        let now = self.clock.now_ms();
        let names = self.table.leased()?;
        for name in &names {
            if self.gate(name).expire_dead_holder()? {
                self.table.set_due(name, now)?;
            }
        }
        Ok(names.len())
    }

    /// The object's alarm: each due slot takes its step ([`Gate::on_alarm`]) and
    /// is due again when that step says (or, if it says nothing but the slot is
    /// still there, when its state next needs the alarm). Returns when the
    /// object's alarm should fire next and the first error met.
    pub async fn on_alarm<R: Records>(
        &self,
        records: &R,
        live: impl Fn(&str) -> bool,
        retry_ms: i64,
    ) -> AlarmDone {
        let now = self.clock.now_ms();
        let mut error = None;
        let due = match self.table.due(now, ALARM_BATCH) {
            Ok(d) => d,
            Err(e) => {
                return AlarmDone {
                    next: Some(now + retry_ms),
                    error: Some(e.to_string()),
                }
            }
        };
        // Records whose D1 write is due, handed over together below.
        let (mut names, mut batch, mut bytes) = (Vec::new(), Vec::new(), 0);
        for name in &due {
            if bytes >= ALARM_BATCH_BYTES {
                break;
            }
            let gate = self.gate(name);
            let done = match gate.alarm_with(&live) {
                Ok(AlarmStep::Sync(data)) => {
                    if let Some(record) = committed(&data) {
                        bytes += record.response.body.len();
                        names.push(name.clone());
                        batch.push((data.record, record));
                        continue;
                    }
                    AlarmDone {
                        next: None,
                        error: None,
                    }
                }
                Ok(step) => gate.settle_step(step, records, retry_ms).await,
                Err(e) => AlarmDone {
                    next: Some(now + retry_ms),
                    error: Some(e.to_string()),
                },
            };
            if error.is_none() {
                error = done.error;
            }
            let next = match done.next {
                Some(t) => Some(t),
                // The step left the slot as it found it, or changed it: it is
                // due when its state says.
                None => match gate.store.load() {
                    Ok(Some(d)) => Some(natural_due(&d.slot.state, d.synced, now, retry_ms)),
                    Ok(None) => None,
                    Err(e) => {
                        error.get_or_insert(e.to_string());
                        Some(now + retry_ms)
                    }
                },
            };
            if let Some(t) = next {
                if let Err(e) = self.table.set_due(name, t) {
                    error.get_or_insert(e.to_string());
                }
            }
        }
        if let Err(e) = self.write_behind(records, &names, &batch, retry_ms).await {
            error.get_or_insert(e);
        }
        let next = match self.table.next_due() {
            // One run settles at most ALARM_BATCH slots: the rest come next, at once.
            Ok(Some(t)) => Some(t.max(now)),
            Ok(None) => None,
            Err(e) => {
                error.get_or_insert(e.to_string());
                Some(now + retry_ms)
            }
        };
        AlarmDone { next, error }
    }

    /// The write-behind of many keys' answers at once ([`Records::upsert_many`]):
    /// each is then due at its expiry — or, if its key was released or answered
    /// anew while the write was on its way, its record is taken back (see
    /// [`Gate::write_behind`]). On a failure all are due again after `retry_ms`.
    async fn write_behind<R: Records>(
        &self,
        records: &R,
        names: &[String],
        batch: &[(RecordKey, Committed)],
        retry_ms: i64,
    ) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut error = None;
        if let Err(e) = records.upsert_many(batch).await {
            let retry = self.clock.now_ms() + retry_ms;
            for name in names {
                let _ = self.table.set_due(name, retry);
            }
            return Err(e.to_string());
        }
        for (name, (key, record)) in names.iter().zip(batch) {
            let kept = self.gate(name).still_answer(record.expires_at);
            let result = match kept {
                Ok(true) => self
                    .table
                    .set_due(name, record.expires_at)
                    .map_err(|e| e.to_string()),
                Ok(false) => records
                    .take_back(key, record.expires_at)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                error.get_or_insert(e);
            }
        }
        error.map_or(Ok(()), Err)
    }

    /// Nothing stored for any key.
    pub fn is_empty(&self) -> StoreResult<bool> {
        self.table.is_empty()
    }
}

/// The record of a completed answer in a slot.
fn committed(data: &super::gate::SlotData) -> Option<Committed> {
    match &data.slot.state {
        SlotState::Completed {
            response,
            expires_at,
        } => Some(Committed {
            fingerprint: data.slot.fingerprint.clone(),
            response: response.clone(),
            created_at: data.created_at,
            expires_at: *expires_at,
        }),
        SlotState::Processing { .. } => None,
    }
}

/// When a slot in `state` next needs the alarm: a lease when it expires (or
/// soon, if it already has), an answer whose record may be missing from D1 after
/// `retry_ms`, any other answer when it expires.
pub fn natural_due(state: &SlotState, synced: bool, now: i64, retry_ms: i64) -> i64 {
    match state {
        SlotState::Processing {
            lease_expires_at, ..
        } if *lease_expires_at > now => *lease_expires_at,
        SlotState::Processing { .. } => now + retry_ms,
        SlotState::Completed { expires_at, .. } if synced || *expires_at <= now => *expires_at,
        SlotState::Completed { .. } => now + retry_ms,
    }
}

/// An in-memory table for host tests.
#[cfg(test)]
pub(crate) mod fakes {
    use super::*;
    use crate::idempotency::gate::SlotData;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    /// Each slot with its due time, by name.
    type Slots = BTreeMap<String, (SlotData, Option<i64>)>;

    #[derive(Clone, Default)]
    pub struct FakeTable {
        pub slots: Rc<RefCell<Slots>>,
        /// The object's last fence.
        pub fence: Rc<std::cell::Cell<i64>>,
    }

    pub struct FakeSlot {
        table: FakeTable,
        name: String,
    }

    impl SlotStore for FakeSlot {
        fn load(&self) -> StoreResult<Option<SlotData>> {
            Ok(self
                .table
                .slots
                .borrow()
                .get(&self.name)
                .map(|(d, _)| d.clone()))
        }
        fn save(&self, data: &SlotData) -> StoreResult<()> {
            let mut slots = self.table.slots.borrow_mut();
            // Like the SQL upsert: a slot keeps its due time when rewritten.
            let due = slots.get(&self.name).and_then(|(_, due)| *due);
            slots.insert(self.name.clone(), (data.clone(), due));
            Ok(())
        }
        fn clear(&self) -> StoreResult<()> {
            self.table.slots.borrow_mut().remove(&self.name);
            Ok(())
        }
        fn last_fence(&self) -> StoreResult<i64> {
            Ok(self.table.fence.get())
        }
        fn save_fence(&self, fence: i64) -> StoreResult<()> {
            self.table.fence.set(fence);
            Ok(())
        }
    }

    impl SlotTable for FakeTable {
        type Slot = FakeSlot;
        fn slot(&self, name: &str) -> FakeSlot {
            FakeSlot {
                table: self.clone(),
                name: name.into(),
            }
        }
        fn set_due(&self, name: &str, at: i64) -> StoreResult<()> {
            if let Some((_, due)) = self.slots.borrow_mut().get_mut(name) {
                *due = Some(at);
            }
            Ok(())
        }
        fn due(&self, now: i64, limit: usize) -> StoreResult<Vec<String>> {
            let mut due: Vec<(i64, String)> = self
                .slots
                .borrow()
                .iter()
                .filter_map(|(n, (_, d))| d.filter(|d| *d <= now).map(|d| (d, n.clone())))
                .collect();
            due.sort();
            Ok(due.into_iter().take(limit).map(|(_, n)| n).collect())
        }
        fn next_due(&self) -> StoreResult<Option<i64>> {
            Ok(self.slots.borrow().values().filter_map(|(_, d)| *d).min())
        }
        fn leased(&self) -> StoreResult<Vec<String>> {
            Ok(self
                .slots
                .borrow()
                .iter()
                .filter(|(_, (d, _))| matches!(d.slot.state, SlotState::Processing { .. }))
                .map(|(n, _)| n.clone())
                .collect())
        }
        fn is_empty(&self) -> StoreResult<bool> {
            Ok(self.slots.borrow().is_empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::FakeTable;
    use super::*;
    use crate::idempotency::execute::{CommitError, KeyState, NewRecord};
    use crate::idempotency::gate::fakes::FakeClock;
    use crate::idempotency::gate::{Committed, Decision};
    use crate::idempotency::StoredResponse;
    use futures_util::FutureExt;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    const LEASE: i64 = 2_000;
    const RETRY: i64 = 30_000;
    const T0: i64 = 1_000_000;

    /// D1's records, in memory; `upserts` counts the write-behinds.
    #[derive(Default)]
    struct Records1 {
        records: RefCell<HashMap<String, Committed>>,
        upserts: Cell<u32>,
        /// Calls of `upsert_many` (hand-overs), and keys taken back.
        batches: Cell<u32>,
        taken_back: RefCell<Vec<String>>,
        /// Run while a batch is "on its way" (between the call and its landing).
        in_flight: RefCell<Option<Box<dyn Fn()>>>,
    }

    impl Records for Records1 {
        type Writes = Vec<String>;
        type Error = String;
        fn is_empty(w: &Vec<String>) -> bool {
            w.is_empty()
        }
        async fn find(&self, key: &RecordKey, now: i64) -> Result<Option<Committed>, String> {
            Ok(self
                .records
                .borrow()
                .get(&key.name())
                .filter(|c| c.expires_at > now)
                .cloned())
        }
        async fn upsert(&self, key: &RecordKey, r: &Committed) -> Result<(), String> {
            self.upserts.set(self.upserts.get() + 1);
            self.records.borrow_mut().insert(key.name(), r.clone());
            Ok(())
        }
        async fn upsert_many(&self, records: &[(RecordKey, Committed)]) -> Result<(), String> {
            self.batches.set(self.batches.get() + 1);
            if let Some(f) = self.in_flight.borrow_mut().take() {
                f();
            }
            for (k, r) in records {
                self.upsert(k, r).await?;
            }
            Ok(())
        }
        async fn take_back(&self, key: &RecordKey, _: i64) -> Result<(), String> {
            self.taken_back.borrow_mut().push(key.key.clone());
            self.records.borrow_mut().remove(&key.name());
            Ok(())
        }
        async fn delete(&self, key: &RecordKey) -> Result<bool, String> {
            Ok(self.records.borrow_mut().remove(&key.name()).is_some())
        }
        async fn commit(
            &self,
            _: Vec<String>,
            _: Option<NewRecord<'_>>,
        ) -> Result<(), CommitError<String>> {
            Ok(())
        }
    }

    struct World {
        table: FakeTable,
        clock: FakeClock,
        records: Records1,
    }

    fn rk(key: &str) -> RecordKey {
        RecordKey {
            scope: "t1\u{1f}alice".into(),
            route: "POST /functions/v1/echo".into(),
            key: key.into(),
        }
    }

    fn ok(body: &str) -> StoredResponse {
        StoredResponse {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    impl World {
        fn new() -> Self {
            World {
                table: FakeTable::default(),
                clock: FakeClock(Cell::new(T0)),
                records: Records1::default(),
            }
        }
        fn shard(&self) -> Shard<&FakeTable, &FakeClock> {
            Shard {
                table: &self.table,
                clock: &self.clock,
                lease_ms: LEASE,
                max_answer_bytes: usize::MAX,
            }
        }
        fn advance(&self, ms: i64) {
            self.clock.0.set(self.clock.0.get() + ms);
        }
        fn admit(&self, key: &str, fp: &str) -> Decision {
            let r = rk(key);
            self.shard()
                .gate(&r.name())
                .admit(&r, fp, "alice", || format!("tok-{key}"))
                .unwrap()
        }
        /// Admits and finishes `key` with a written-behind answer, its record
        /// not yet in D1, and the retry due as the object arms it.
        fn answer(&self, key: &str, ttl: i64) {
            let name = rk(key).name();
            let Decision::Execute { token, .. } = self.admit(key, "fp") else {
                panic!("{key} should execute")
            };
            let expires = self.clock.0.get() + ttl;
            self.shard()
                .gate(&name)
                .finish(&token, ok(key), expires, false, |_| ok("too large"))
                .unwrap();
            self.table
                .set_due(&name, self.clock.0.get() + RETRY)
                .unwrap();
        }
        fn alarm(&self) -> AlarmDone {
            self.shard()
                .on_alarm(&self.records, |_| false, RETRY)
                .now_or_never()
                .expect("the fakes never wait")
        }
        fn state(&self, key: &str) -> Option<KeyState> {
            let r = rk(key);
            self.shard()
                .gate(&r.name())
                .describe(&self.records, &r)
                .now_or_never()
                .unwrap()
                .unwrap()
        }
    }

    #[test]
    fn keys_in_one_object_are_decided_apart() {
        let w = World::new();
        assert!(matches!(w.admit("a", "fp-a"), Decision::Execute { .. }));
        // Another key in the same object runs at once, whatever its payload.
        assert!(matches!(w.admit("b", "fp-b"), Decision::Execute { .. }));
        // The same key is in flight; another payload under it is a mismatch.
        assert!(matches!(w.admit("a", "fp-a"), Decision::InFlight { .. }));
        assert!(matches!(w.admit("b", "fp-a"), Decision::Mismatch));
    }

    #[test]
    fn the_alarm_settles_only_the_due_slots_and_fires_next_at_the_earliest_left() {
        let w = World::new();
        w.answer("early", 60_000);
        w.advance(10_000);
        w.answer("late", 60_000);
        // Only "early" is due (its record's retry).
        w.advance(RETRY - 10_000);
        let done = w.alarm();
        assert_eq!(done.error, None);
        assert_eq!(w.records.upserts.get(), 1);
        // "early" is next due at its expiry, "late" at its retry: the earlier.
        assert_eq!(done.next, Some(T0 + 10_000 + RETRY));
        w.advance(10_000);
        let done = w.alarm();
        assert_eq!(w.records.upserts.get(), 2);
        assert!(matches!(w.state("late"), Some(KeyState::Completed { .. })));
        assert_eq!(done.next, Some(T0 + 60_000));
        // At the first expiry only that answer goes; the other stays.
        w.advance(60_000 - RETRY - 10_000);
        let done = w.alarm();
        assert!(w.table.slots.borrow().get(&rk("early").name()).is_none());
        assert!(w.table.slots.borrow().get(&rk("late").name()).is_some());
        assert_eq!(done.next, Some(T0 + 10_000 + 60_000));
        w.advance(10_000);
        let done = w.alarm();
        assert_eq!(done.next, None);
        assert!(w.shard().is_empty().unwrap());
    }

    #[test]
    fn a_new_instance_expires_every_lease_and_the_alarm_settles_each_dead_holder() {
        let w = World::new();
        for k in ["a", "b", "c"] {
            assert!(matches!(w.admit(k, "fp"), Decision::Execute { .. }));
        }
        // "b"'s holder committed its answer to D1 before the instance died.
        w.records.records.borrow_mut().insert(
            rk("b").name(),
            Committed {
                fingerprint: "fp".into(),
                response: ok("b's answer"),
                created_at: T0,
                expires_at: T0 + 60_000,
            },
        );
        w.answer("done", 60_000);
        w.advance(100);
        assert_eq!(w.shard().expire_dead_holders().unwrap(), 3);
        // The next request for a dead holder's key takes over at once.
        assert!(matches!(
            w.admit("a", "fp"),
            Decision::Execute { takeover: true, .. }
        ));
        // Without any request, the alarm settles the others now.
        let done = w.alarm();
        assert_eq!(done.error, None);
        // "b" adopted its committed answer; "c" is free again; "done" untouched.
        assert!(matches!(
            w.admit("b", "fp"),
            Decision::Replay { response, .. } if response == ok("b's answer")
        ));
        assert!(w.table.slots.borrow().get(&rk("c").name()).is_none());
        assert!(matches!(w.admit("done", "fp"), Decision::Replay { .. }));
        // "a"'s new holder has no alarm due yet; the answers are due later.
        assert!(done.next.unwrap() > w.clock.0.get());
    }

    #[test]
    fn a_slot_whose_step_names_no_time_is_still_due_when_its_state_needs_it() {
        let w = World::new();
        // A lease with its due time in the past but the lease itself live (a
        // renewal moved it): the alarm re-arms it for the lease's expiry.
        assert!(matches!(w.admit("a", "fp"), Decision::Execute { .. }));
        w.table.set_due(&rk("a").name(), T0).unwrap();
        let done = w.alarm();
        assert_eq!(done.next, Some(T0 + LEASE));
    }

    #[test]
    fn one_alarm_run_settles_at_most_a_batch_and_comes_back_at_once() {
        let w = World::new();
        for i in 0..ALARM_BATCH + 5 {
            w.answer(&format!("k{i}"), 60_000);
        }
        w.advance(RETRY);
        let done = w.alarm();
        assert_eq!(w.records.upserts.get() as usize, ALARM_BATCH);
        assert_eq!(done.next, Some(w.clock.0.get()));
        let done = w.alarm();
        assert_eq!(w.records.upserts.get() as usize, ALARM_BATCH + 5);
        assert_eq!(done.next, Some(T0 + 60_000));
    }

    #[test]
    fn due_records_are_handed_over_in_one_batch_and_a_key_released_meanwhile_is_taken_back() {
        let w = World::new();
        for k in ["a", "b", "c"] {
            w.answer(k, 60_000);
        }
        w.advance(RETRY);
        // While the batch is on its way, "b" is released (its slot cleared).
        let table = w.table.clone();
        *w.records.in_flight.borrow_mut() = Some(Box::new(move || {
            table.slots.borrow_mut().remove(&rk("b").name());
        }));
        let done = w.alarm();
        assert_eq!(done.error, None);
        assert_eq!((w.records.batches.get(), w.records.upserts.get()), (1, 3));
        assert_eq!(*w.records.taken_back.borrow(), vec!["b".to_string()]);
        let in_d1: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|k| w.records.records.borrow().contains_key(&rk(k).name()))
            .collect();
        assert_eq!(in_d1, [true, false, true]);
        // The others are next due at their expiry, not re-sent before.
        assert_eq!(done.next, Some(T0 + 60_000));
    }

    #[test]
    fn an_object_is_empty_only_while_none_of_its_keys_holds_or_answers_anything() {
        let w = World::new();
        assert_eq!(w.shard().is_empty(), Ok(true));
        let Decision::Execute { token, .. } = w.admit("a", "fp") else {
            panic!("a should execute")
        };
        assert_eq!(w.shard().is_empty(), Ok(false));
        assert_eq!(w.shard().gate(&rk("a").name()).release(&token), Ok(true));
        assert_eq!(w.shard().is_empty(), Ok(true));
        w.answer("a", 1_000);
        assert!(matches!(w.admit("b", "fp"), Decision::Execute { .. }));
        // "a" expires and its slot goes; "b" still holds its lease.
        w.advance(RETRY);
        w.alarm();
        assert!(w.table.slots.borrow().get(&rk("a").name()).is_none());
        assert_eq!(w.shard().is_empty(), Ok(false));
        let b = rk("b").name();
        let Some((data, _)) = w.table.slots.borrow().get(&b).cloned() else {
            panic!("b holds its lease")
        };
        let SlotState::Processing { token, .. } = data.slot.state else {
            panic!("b is processing")
        };
        assert_eq!(w.shard().gate(&b).release(&token), Ok(true));
        assert_eq!(w.shard().is_empty(), Ok(true));
    }

    #[test]
    fn one_alarm_run_holds_a_bounded_number_of_answer_bytes_and_comes_back_for_the_rest() {
        let w = World::new();
        let big = "x".repeat(ALARM_BATCH_BYTES / 2 + 1);
        for k in ["a", "b", "c"] {
            let name = rk(k).name();
            let Decision::Execute { token, .. } = w.admit(k, "fp") else {
                panic!("{k} should execute")
            };
            w.shard()
                .gate(&name)
                .finish(&token, ok(&big), T0 + 60_000, false, |_| ok("too large"))
                .unwrap();
            w.table.set_due(&name, T0 + RETRY).unwrap();
        }
        w.advance(RETRY);
        let done = w.alarm();
        assert_eq!((w.records.batches.get(), w.records.upserts.get()), (1, 2));
        assert_eq!(done.next, Some(w.clock.0.get()));
        let done = w.alarm();
        assert_eq!((w.records.batches.get(), w.records.upserts.get()), (2, 3));
        assert_eq!(done.next, Some(T0 + 60_000));
    }

    #[test]
    fn natural_due_times() {
        let lease = |at| SlotState::Processing {
            token: "t".into(),
            lease_expires_at: at,
        };
        let answer = |at| SlotState::Completed {
            response: ok(""),
            expires_at: at,
        };
        assert_eq!(natural_due(&lease(T0 + 5), false, T0, RETRY), T0 + 5);
        assert_eq!(natural_due(&lease(T0), false, T0, RETRY), T0 + RETRY);
        assert_eq!(natural_due(&answer(T0 + 5), true, T0, RETRY), T0 + 5);
        assert_eq!(natural_due(&answer(T0 + 5), false, T0, RETRY), T0 + RETRY);
        assert_eq!(natural_due(&answer(T0 - 5), false, T0, RETRY), T0 - 5);
    }
}
