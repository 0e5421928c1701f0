//! The gate object's SQLite as a [`SlotTable`]: a `slots` row per key, by the
//! key's name, with the time the alarm is next due for it, and each answer's
//! body in base64 chunks under the 2 MB row limit (chunk 0 in the row, the rest
//! in `slots_body`). Every call is a synchronous `exec`: the object's
//! check-and-set relies on that (see `idempotency::gate`).
//!
//! The tables are created by the first write, not when the object starts: an
//! object that is only asked about a key (a status read, a release of a key
//! never used) never gets a database. Once it holds no slot again the object
//! drops it whole (`deleteAll`, see `keygate_do`) and [`SqlSlots::forget`]s it.

mod schema;

use crate::idempotency::gate::{RecordKey, SlotData, SlotStore, StoreError, StoreResult};
use crate::idempotency::shard::SlotTable;
use crate::idempotency::{Slot, SlotState, StoredResponse};
use crate::store::{decode_chunks, encode_chunks, encode_headers};
use serde::Deserialize;
use std::cell::Cell;
use std::rc::Rc;
use worker::{SqlStorage, SqlStorageValue};

const COLUMNS: &str = "fingerprint, state, token, lease_expires_at, response_status, \
    response_headers, response_body, created_at, expires_at, scope, route, key, d1_synced, owner, \
    body_chunks";

/// Clones share what they know of the tables (one object, one database).
#[derive(Clone)]
pub struct SqlSlots {
    sql: SqlStorage,
    schema: Rc<Cell<Schema>>,
    /// The fence table is known to exist.
    fence_table: Rc<Cell<bool>>,
}

/// What this instance knows of its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    Unknown,
    Absent,
    Ready,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn num(v: i64) -> SqlStorageValue {
    SqlStorageValue::Float(v as f64)
}

/// A key's slot as the JSON object [`Row`] reads.
const LOAD_ROW: &str = "SELECT json_object('fingerprint', fingerprint, 'state', state, \
    'token', token, 'lease_expires_at', lease_expires_at, 'response_status', response_status, \
    'response_headers', response_headers, 'response_body', response_body, \
    'created_at', created_at, 'expires_at', expires_at, 'scope', scope, 'route', route, \
    'key', key, 'd1_synced', d1_synced, 'owner', owner, 'body_chunks', body_chunks) AS row \
    FROM slots WHERE name = ?";

#[derive(Deserialize)]
struct Row {
    fingerprint: String,
    state: String,
    token: Option<String>,
    lease_expires_at: Option<f64>,
    response_status: Option<f64>,
    response_headers: Option<String>,
    response_body: Option<String>,
    created_at: f64,
    expires_at: Option<f64>,
    scope: Option<String>,
    route: Option<String>,
    key: Option<String>,
    d1_synced: Option<f64>,
    owner: Option<String>,
    body_chunks: Option<f64>,
}

impl SqlSlots {
    /// Creates the tables (a new object's first write commits with its lease).
    pub fn new(sql: SqlStorage) -> Self {
        SqlSlots {
            sql,
            schema: Rc::new(Cell::new(Schema::Unknown)),
            fence_table: Rc::new(Cell::new(false)),
        }
    }

    /// After `deleteAll`: the tables are gone; the next write creates them.
    pub fn forget(&self) {
        self.schema.set(Schema::Absent);
        self.fence_table.set(false);
    }

    /// The last fence issued (0 if none, or no database).
    pub fn last_fence(&self) -> StoreResult<i64> {
        #[derive(Deserialize)]
        struct Last {
            last: f64,
        }
        if !self.readable()? || !self.fenced()? {
            return Ok(0);
        }
        let rows: Vec<Last> = self
            .sql
            .exec("SELECT last FROM fence WHERE id = 0", None)
            .and_then(|c| c.to_array())
            .map_err(err)?;
        Ok(rows.into_iter().next().map_or(0, |r| r.last as i64))
    }

    fn save_fence(&self, fence: i64) -> StoreResult<()> {
        self.writable()?;
        self.fence_writable()?;
        self.sql
            .exec(
                "INSERT INTO fence (id, last) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET last = excluded.last",
                vec![num(fence)],
            )
            .map_err(err)?;
        Ok(())
    }

    fn names(&self, query: &str, args: Vec<SqlStorageValue>) -> StoreResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        if !self.readable()? {
            return Ok(Vec::new());
        }
        let rows: Vec<Name> = self
            .sql
            .exec(query, args)
            .and_then(|c| c.to_array())
            .map_err(err)?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }
}

/// One key's slot in the object's tables.
pub struct SqlSlot {
    slots: SqlSlots,
    name: String,
}

impl SqlSlot {
    fn body(&self, first: &str, chunks: usize) -> StoreResult<Vec<u8>> {
        if chunks <= 1 {
            return decode_chunks([first]).map_err(err);
        }
        #[derive(Deserialize)]
        struct Chunk {
            data: String,
        }
        let rest: Vec<Chunk> = self
            .slots
            .sql
            .exec(
                "SELECT data FROM slots_body WHERE name = ? ORDER BY idx",
                vec![self.name.as_str().into()],
            )
            .and_then(|c| c.to_array())
            .map_err(err)?;
        if rest.len() != chunks - 1 {
            return Err(StoreError(format!(
                "slot has {} of its {chunks} body chunks",
                rest.len() + 1
            )));
        }
        decode_chunks(std::iter::once(first).chain(rest.iter().map(|c| c.data.as_str())))
            .map_err(err)
    }

    fn exec(&self, query: &str, mut args: Vec<SqlStorageValue>) -> StoreResult<()> {
        args.push(self.name.as_str().into());
        self.slots.sql.exec(query, args).map_err(err)?;
        Ok(())
    }
}

impl SlotStore for SqlSlot {
    fn load(&self) -> StoreResult<Option<SlotData>> {
        if !self.slots.readable()? {
            return Ok(None);
        }
        // The row as one JSON text: one value to carry out of the runtime
        // instead of one per column.
        #[derive(Deserialize)]
        struct Json {
            row: String,
        }
        let rows: Vec<Json> = self
            .slots
            .sql
            .exec(LOAD_ROW, vec![self.name.as_str().into()])
            .and_then(|c| c.to_array())
            .map_err(err)?;
        let Some(json) = rows.into_iter().next() else {
            return Ok(None);
        };
        let r: Row = serde_json::from_str(&json.row).map_err(err)?;
        let state = if r.state == "processing" {
            SlotState::Processing {
                token: r.token.unwrap_or_default(),
                lease_expires_at: r.lease_expires_at.unwrap_or(0.0) as i64,
            }
        } else {
            let chunks = r.body_chunks.unwrap_or(1.0) as usize;
            SlotState::Completed {
                response: StoredResponse {
                    status: r.response_status.unwrap_or(500.0) as u16,
                    headers: serde_json::from_str(r.response_headers.as_deref().unwrap_or("[]"))
                        .map_err(err)?,
                    body: self.body(r.response_body.as_deref().unwrap_or(""), chunks)?,
                },
                expires_at: r.expires_at.unwrap_or(0.0) as i64,
            }
        };
        Ok(Some(SlotData {
            slot: Slot {
                fingerprint: r.fingerprint,
                state,
            },
            owner: r.owner.unwrap_or_default(),
            created_at: r.created_at as i64,
            synced: r.d1_synced.unwrap_or(1.0) != 0.0,
            record: RecordKey {
                scope: r.scope.unwrap_or_default(),
                route: r.route.unwrap_or_default(),
                key: r.key.unwrap_or_default(),
            },
        }))
    }

    fn save(&self, d: &SlotData) -> StoreResult<()> {
        self.slots.writable()?;
        let (state, token, lease, status, headers, chunks, expires) = match &d.slot.state {
            SlotState::Processing {
                token,
                lease_expires_at,
            } => (
                "processing",
                SqlStorageValue::from(token.as_str()),
                num(*lease_expires_at),
                SqlStorageValue::Null,
                SqlStorageValue::Null,
                vec![String::new()],
                SqlStorageValue::Null,
            ),
            SlotState::Completed {
                response,
                expires_at,
            } => (
                "completed",
                SqlStorageValue::Null,
                SqlStorageValue::Null,
                SqlStorageValue::Integer(response.status as i64),
                SqlStorageValue::from(encode_headers(&response.headers)),
                encode_chunks(&response.body),
                num(*expires_at),
            ),
        };
        let body = match &d.slot.state {
            SlotState::Processing { .. } => SqlStorageValue::Null,
            SlotState::Completed { .. } => SqlStorageValue::from(chunks[0].as_str()),
        };
        // An upsert, not a replace: the slot keeps its due time.
        self.exec(
            &format!(
                "INSERT INTO slots ({COLUMNS}, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, \
                 state = excluded.state, token = excluded.token, \
                 lease_expires_at = excluded.lease_expires_at, \
                 response_status = excluded.response_status, \
                 response_headers = excluded.response_headers, \
                 response_body = excluded.response_body, created_at = excluded.created_at, \
                 expires_at = excluded.expires_at, scope = excluded.scope, route = excluded.route, \
                 key = excluded.key, d1_synced = excluded.d1_synced, owner = excluded.owner, \
                 body_chunks = excluded.body_chunks"
            ),
            vec![
                d.slot.fingerprint.as_str().into(),
                state.into(),
                token,
                lease,
                status,
                headers,
                body,
                num(d.created_at),
                expires,
                d.record.scope.as_str().into(),
                d.record.route.as_str().into(),
                d.record.key.as_str().into(),
                SqlStorageValue::Integer(d.synced as i64),
                d.owner.as_str().into(),
                SqlStorageValue::Integer(chunks.len() as i64),
            ],
        )?;
        if chunks.len() > 1 {
            self.exec("DELETE FROM slots_body WHERE name = ?", vec![])?;
            for (idx, data) in chunks.iter().enumerate().skip(1) {
                self.slots
                    .sql
                    .exec(
                        "INSERT INTO slots_body (name, idx, data) VALUES (?, ?, ?)",
                        vec![
                            self.name.as_str().into(),
                            SqlStorageValue::Integer(idx as i64),
                            data.as_str().into(),
                        ],
                    )
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    fn answer_expiry(&self) -> StoreResult<Option<i64>> {
        #[derive(Deserialize)]
        struct Expiry {
            expires_at: Option<f64>,
        }
        if !self.slots.readable()? {
            return Ok(None);
        }
        let rows: Vec<Expiry> = self
            .slots
            .sql
            .exec(
                "SELECT expires_at FROM slots WHERE name = ? AND state = 'completed'",
                vec![self.name.as_str().into()],
            )
            .and_then(|c| c.to_array())
            .map_err(err)?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.expires_at)
            .map(|e| e as i64))
    }

    fn clear(&self) -> StoreResult<()> {
        if self.slots.readable()? {
            self.exec("DELETE FROM slots WHERE name = ?", vec![])?;
            self.exec("DELETE FROM slots_body WHERE name = ?", vec![])?;
        }
        Ok(())
    }

    fn last_fence(&self) -> StoreResult<i64> {
        self.slots.last_fence()
    }

    fn save_fence(&self, fence: i64) -> StoreResult<()> {
        self.slots.save_fence(fence)
    }
}

impl SlotTable for SqlSlots {
    type Slot = SqlSlot;

    fn slot(&self, name: &str) -> SqlSlot {
        SqlSlot {
            slots: self.clone(),
            name: name.into(),
        }
    }

    fn set_due(&self, name: &str, at: i64) -> StoreResult<()> {
        if self.readable()? {
            self.sql
                .exec(
                    "UPDATE slots SET due_at = ? WHERE name = ?",
                    vec![num(at), name.into()],
                )
                .map_err(err)?;
        }
        Ok(())
    }

    fn due(&self, now: i64, limit: usize) -> StoreResult<Vec<String>> {
        self.names(
            "SELECT name FROM slots WHERE due_at <= ? ORDER BY due_at LIMIT ?",
            vec![num(now), SqlStorageValue::Integer(limit as i64)],
        )
    }

    fn next_due(&self) -> StoreResult<Option<i64>> {
        #[derive(Deserialize)]
        struct Due {
            due: Option<f64>,
        }
        if !self.readable()? {
            return Ok(None);
        }
        let rows: Vec<Due> = self
            .sql
            .exec("SELECT MIN(due_at) AS due FROM slots", None)
            .and_then(|c| c.to_array())
            .map_err(err)?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| r.due)
            .map(|d| d as i64))
    }

    fn leased(&self) -> StoreResult<Vec<String>> {
        self.names(
            "SELECT name FROM slots WHERE state = 'processing'",
            Vec::new(),
        )
    }

    fn is_empty(&self) -> StoreResult<bool> {
        Ok(self
            .names("SELECT name FROM slots LIMIT 1", Vec::new())?
            .is_empty())
    }
}
