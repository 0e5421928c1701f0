//! The key's object's memory of its slots: a write-through copy of the slots it
//! read or wrote, kept beside its table so that a replay does not read SQLite.
//!
//! It lives in the object, which runs one request's step at a time: every
//! write to a slot goes through [`MemoSlot`], which forgets the slot before
//! writing and remembers it only once the write succeeded, so a load answers
//! what the table holds, even after a failed or half-done write. It is not a
//! second decision: [`crate::idempotency::gate`] decides over it as over the
//! table. Bounded: at most `max_entries` slots, none whose answer's body
//! exceeds `max_body` bytes; the rest are read from the table each time.

use super::gate::{SlotData, SlotStore, StoreResult};
use super::shard::SlotTable;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

struct Memory {
    slots: RefCell<HashMap<String, SlotData>>,
    max_entries: usize,
    max_body: usize,
}

impl Memory {
    fn get(&self, name: &str) -> Option<SlotData> {
        self.slots.borrow().get(name).cloned()
    }

    fn forget(&self, name: &str) {
        self.slots.borrow_mut().remove(name);
    }

    fn remember(&self, name: &str, data: &SlotData) {
        let body = match &data.slot.state {
            super::SlotState::Completed { response, .. } => response.body.len(),
            super::SlotState::Processing { .. } => 0,
        };
        let mut slots = self.slots.borrow_mut();
        if body <= self.max_body && (slots.len() < self.max_entries || slots.contains_key(name)) {
            slots.insert(name.to_string(), data.clone());
        }
    }
}

/// A [`SlotTable`] with its slots remembered; clones share the memory.
pub struct MemoTable<T> {
    table: T,
    memory: Rc<Memory>,
}

impl<T: Clone> Clone for MemoTable<T> {
    fn clone(&self) -> Self {
        MemoTable {
            table: self.table.clone(),
            memory: Rc::clone(&self.memory),
        }
    }
}

impl<T> MemoTable<T> {
    pub fn new(table: T, max_entries: usize, max_body: usize) -> Self {
        MemoTable {
            table,
            memory: Rc::new(Memory {
                slots: RefCell::new(HashMap::new()),
                max_entries,
                max_body,
            }),
        }
    }

    /// The table itself.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// Forgets every slot: the table was dropped whole.
    pub fn forget_all(&self) {
        self.memory.slots.borrow_mut().clear();
    }

    /// How many slots are remembered.
    pub fn remembered(&self) -> usize {
        self.memory.slots.borrow().len()
    }
}

/// One key's slot, through the memory.
pub struct MemoSlot<S> {
    slot: S,
    name: String,
    memory: Rc<Memory>,
}

impl<S: SlotStore> SlotStore for MemoSlot<S> {
    fn load(&self) -> StoreResult<Option<SlotData>> {
        if let Some(data) = self.memory.get(&self.name) {
            return Ok(Some(data));
        }
        let data = self.slot.load()?;
        if let Some(d) = &data {
            self.memory.remember(&self.name, d);
        }
        Ok(data)
    }

    fn save(&self, data: &SlotData) -> StoreResult<()> {
        self.memory.forget(&self.name);
        self.slot.save(data)?;
        self.memory.remember(&self.name, data);
        Ok(())
    }

    fn clear(&self) -> StoreResult<()> {
        self.memory.forget(&self.name);
        self.slot.clear()
    }

    fn last_fence(&self) -> StoreResult<i64> {
        self.slot.last_fence()
    }

    fn save_fence(&self, fence: i64) -> StoreResult<()> {
        self.slot.save_fence(fence)
    }

    fn answer_expiry(&self) -> StoreResult<Option<i64>> {
        match self.memory.get(&self.name) {
            Some(d) => Ok(match d.slot.state {
                super::SlotState::Completed { expires_at, .. } => Some(expires_at),
                super::SlotState::Processing { .. } => None,
            }),
            None => self.slot.answer_expiry(),
        }
    }
}

impl<T: SlotTable> SlotTable for MemoTable<T> {
    type Slot = MemoSlot<T::Slot>;

    fn slot(&self, name: &str) -> Self::Slot {
        MemoSlot {
            slot: self.table.slot(name),
            name: name.to_string(),
            memory: Rc::clone(&self.memory),
        }
    }
    fn set_due(&self, name: &str, at: i64) -> StoreResult<()> {
        self.table.set_due(name, at)
    }
    fn due(&self, now: i64, limit: usize) -> StoreResult<Vec<String>> {
        self.table.due(now, limit)
    }
    fn next_due(&self) -> StoreResult<Option<i64>> {
        self.table.next_due()
    }
    fn leased(&self) -> StoreResult<Vec<String>> {
        self.table.leased()
    }
    fn is_empty(&self) -> StoreResult<bool> {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::gate::{RecordKey, StoreError};
    use crate::idempotency::{Slot, SlotState, StoredResponse};
    use proptest::prelude::*;
    use std::cell::Cell;

    /// A table in memory whose next write may fail, after writing (a half-done
    /// write) or before.
    #[derive(Clone, Default)]
    struct Table {
        rows: Rc<RefCell<HashMap<String, SlotData>>>,
        fail_next: Rc<Cell<Option<bool>>>,
    }

    struct Row {
        table: Table,
        name: String,
    }

    impl Table {
        fn write(&self, f: impl FnOnce(&mut HashMap<String, SlotData>)) -> StoreResult<()> {
            match self.fail_next.take() {
                Some(true) => {
                    f(&mut self.rows.borrow_mut());
                    Err(StoreError("failed after writing".into()))
                }
                Some(false) => Err(StoreError("failed before writing".into())),
                None => {
                    f(&mut self.rows.borrow_mut());
                    Ok(())
                }
            }
        }
    }

    impl SlotStore for Row {
        fn load(&self) -> StoreResult<Option<SlotData>> {
            Ok(self.table.rows.borrow().get(&self.name).cloned())
        }
        fn save(&self, data: &SlotData) -> StoreResult<()> {
            self.table.write(|r| {
                r.insert(self.name.clone(), data.clone());
            })
        }
        fn clear(&self) -> StoreResult<()> {
            self.table.write(|r| {
                r.remove(&self.name);
            })
        }
        fn last_fence(&self) -> StoreResult<i64> {
            Ok(0)
        }
        fn save_fence(&self, _: i64) -> StoreResult<()> {
            Ok(())
        }
    }

    impl SlotTable for Table {
        type Slot = Row;
        fn slot(&self, name: &str) -> Row {
            Row {
                table: self.clone(),
                name: name.into(),
            }
        }
        fn set_due(&self, _: &str, _: i64) -> StoreResult<()> {
            Ok(())
        }
        fn due(&self, _: i64, _: usize) -> StoreResult<Vec<String>> {
            Ok(Vec::new())
        }
        fn next_due(&self) -> StoreResult<Option<i64>> {
            Ok(None)
        }
        fn leased(&self) -> StoreResult<Vec<String>> {
            Ok(Vec::new())
        }
        fn is_empty(&self) -> StoreResult<bool> {
            Ok(self.rows.borrow().is_empty())
        }
    }

    fn data(fingerprint: &str, completed: Option<(usize, i64)>) -> SlotData {
        let state = match completed {
            Some((body, expires_at)) => SlotState::Completed {
                response: StoredResponse {
                    status: 201,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: vec![b'x'; body],
                },
                expires_at,
            },
            None => SlotState::Processing {
                token: format!("t-{fingerprint}"),
                lease_expires_at: 5_000,
            },
        };
        SlotData {
            slot: Slot {
                fingerprint: fingerprint.into(),
                state,
            },
            owner: "u".into(),
            created_at: 1,
            synced: true,
            record: RecordKey {
                scope: "s".into(),
                route: "r".into(),
                key: "k".into(),
            },
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Save {
            name: usize,
            fingerprint: u8,
            completed: Option<(usize, i64)>,
            fail: Option<bool>,
        },
        Clear {
            name: usize,
            fail: Option<bool>,
        },
        Load(usize),
        Expiry(usize),
        /// The table dropped whole (`deleteAll`) and the memory told so.
        DropAll,
    }

    fn op() -> impl Strategy<Value = Op> {
        let fail = prop_oneof![6 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))];
        prop_oneof![
            (
                0..4usize,
                0..3u8,
                proptest::option::of((0..40usize, 0..100i64)),
                fail.clone()
            )
                .prop_map(|(name, fingerprint, completed, fail)| Op::Save {
                    name,
                    fingerprint,
                    completed,
                    fail
                }),
            (0..4usize, fail).prop_map(|(name, fail)| Op::Clear { name, fail }),
            (0..4usize).prop_map(Op::Load),
            (0..4usize).prop_map(Op::Expiry),
            Just(Op::DropAll),
        ]
    }

    proptest! {
        /// Whatever the writes, failed ones included, every load and expiry
        /// through the memory is what the table itself holds at that moment.
        #[test]
        fn the_memory_answers_what_the_table_holds(ops in proptest::collection::vec(op(), 1..60)) {
            let table = Table::default();
            // Room for two slots, bodies up to 20 bytes: some are never remembered.
            let memo = MemoTable::new(table.clone(), 2, 20);
            let name = |i: usize| format!("key-{i}");
            for op in ops {
                match op {
                    Op::Save { name: n, fingerprint, completed, fail } => {
                        table.fail_next.set(fail);
                        let d = data(&fingerprint.to_string(), completed);
                        let _ = memo.slot(&name(n)).save(&d);
                    }
                    Op::Clear { name: n, fail } => {
                        table.fail_next.set(fail);
                        let _ = memo.slot(&name(n)).clear();
                    }
                    Op::Load(n) => {
                        prop_assert_eq!(memo.slot(&name(n)).load().unwrap(), table.slot(&name(n)).load().unwrap());
                    }
                    Op::Expiry(n) => {
                        prop_assert_eq!(
                            memo.slot(&name(n)).answer_expiry().unwrap(),
                            table.slot(&name(n)).answer_expiry().unwrap()
                        );
                    }
                    Op::DropAll => {
                        table.rows.borrow_mut().clear();
                        memo.forget_all();
                    }
                }
                prop_assert!(memo.remembered() <= 2);
                for i in 0..4 {
                    prop_assert_eq!(memo.slot(&name(i)).load().unwrap(), table.slot(&name(i)).load().unwrap());
                }
            }
        }
    }

    #[test]
    fn a_remembered_replay_does_not_read_the_table() {
        let table = Table::default();
        let memo = MemoTable::new(table.clone(), 8, 1024);
        memo.slot("a").save(&data("f", Some((3, 9)))).unwrap();
        // Changed behind the memory's back (never done in the object): the
        // memory's copy is what answers, so the table was not read.
        table.rows.borrow_mut().clear();
        assert_eq!(
            memo.slot("a").load().unwrap(),
            Some(data("f", Some((3, 9))))
        );
    }
}
