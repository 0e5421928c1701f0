//! The key object's SQLite as a [`SlotStore`]: one `slot` row, and the answer's
//! body in base64 chunks under the 2 MB row limit (chunk 0 in the row, the rest
//! in `slot_body`). Every call is a synchronous `exec`: the object's
//! check-and-set relies on that (see `idempotency::gate`).
//!
//! The tables are created by the first write, not when the object starts: an
//! object that is only asked about its key (a status read, a release of a key
//! never used) never gets a database. Once its slot is empty again the object
//! drops it whole (`deleteAll`, see `keygate_do`) and [`SqlSlots::forget`]s it.

use crate::idempotency::gate::{RecordKey, SlotData, SlotStore, StoreError, StoreResult};
use crate::idempotency::{Slot, SlotState, StoredResponse};
use crate::store::{decode_chunks, encode_chunks, encode_headers};
use serde::Deserialize;
use std::cell::Cell;
use std::rc::Rc;
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS slot (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  fingerprint TEXT NOT NULL,
  state TEXT NOT NULL,
  token TEXT,
  lease_expires_at REAL,
  response_status INTEGER,
  response_headers TEXT,
  response_body TEXT,
  created_at REAL NOT NULL,
  expires_at REAL,
  scope TEXT,
  route TEXT,
  key TEXT,
  -- 0: the answer's D1 record is written behind it, so while the slot lives an
  -- alarm (re-)writes it; the write is an upsert, so that is safe.
  d1_synced INTEGER NOT NULL DEFAULT 1,
  owner TEXT,
  body_chunks INTEGER NOT NULL DEFAULT 1
)";

const BODY_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS slot_body (idx INTEGER PRIMARY KEY, data TEXT NOT NULL)";

/// Columns added after the first release, for objects created before them.
const UPGRADES: &[(&str, &str)] = &[
    ("scope", "ALTER TABLE slot ADD COLUMN scope TEXT"),
    ("route", "ALTER TABLE slot ADD COLUMN route TEXT"),
    ("key", "ALTER TABLE slot ADD COLUMN key TEXT"),
    (
        "d1_synced",
        "ALTER TABLE slot ADD COLUMN d1_synced INTEGER NOT NULL DEFAULT 1",
    ),
    ("owner", "ALTER TABLE slot ADD COLUMN owner TEXT"),
    (
        "body_chunks",
        "ALTER TABLE slot ADD COLUMN body_chunks INTEGER NOT NULL DEFAULT 1",
    ),
];

/// Clones share what they know of the tables (one object, one database).
#[derive(Clone)]
pub struct SqlSlots {
    sql: SqlStorage,
    schema: Rc<Cell<Schema>>,
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
        }
    }

    /// After `deleteAll`: the tables are gone; the next write creates them.
    pub fn forget(&self) {
        self.schema.set(Schema::Absent);
    }

    /// Whether the tables exist (brought up to date if they do).
    fn readable(&self) -> StoreResult<bool> {
        match self.schema.get() {
            Schema::Ready => return Ok(true),
            Schema::Absent => return Ok(false),
            Schema::Unknown => {}
        }
        #[derive(Deserialize)]
        struct Col {
            name: String,
        }
        // Empty when the table does not exist.
        let cols: Vec<Col> = self
            .sql
            .exec("SELECT name FROM pragma_table_info('slot')", None)
            .and_then(|c| c.to_array())
            .map_err(err)?;
        if cols.is_empty() {
            self.schema.set(Schema::Absent);
            return Ok(false);
        }
        for (col, ddl) in UPGRADES {
            if !cols.iter().any(|c| c.name == *col) {
                self.sql.exec(ddl, None).map_err(err)?;
            }
        }
        self.schema.set(Schema::Ready);
        Ok(true)
    }

    /// Creates the tables if they do not exist.
    fn writable(&self) -> StoreResult<()> {
        if !self.readable()? {
            self.sql.exec(SCHEMA, None).map_err(err)?;
            self.sql.exec(BODY_SCHEMA, None).map_err(err)?;
            self.schema.set(Schema::Ready);
        }
        Ok(())
    }

    fn body(&self, first: &str, chunks: usize) -> StoreResult<Vec<u8>> {
        if chunks <= 1 {
            return decode_chunks([first]).map_err(err);
        }
        #[derive(Deserialize)]
        struct Chunk {
            data: String,
        }
        let rest: Vec<Chunk> = self
            .sql
            .exec("SELECT data FROM slot_body ORDER BY idx", None)
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
}

impl SlotStore for SqlSlots {
    fn load(&self) -> StoreResult<Option<SlotData>> {
        if !self.readable()? {
            return Ok(None);
        }
        let rows: Vec<Row> = self
            .sql
            .exec(
                "SELECT fingerprint, state, token, lease_expires_at, response_status, response_headers, \
                 response_body, created_at, expires_at, scope, route, key, d1_synced, owner, body_chunks \
                 FROM slot WHERE id = 1",
                None,
            )
            .and_then(|c| c.to_array())
            .map_err(err)?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
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
        self.writable()?;
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
        self.sql
            .exec(
                "INSERT OR REPLACE INTO slot (id, fingerprint, state, token, lease_expires_at, response_status, \
                 response_headers, response_body, created_at, expires_at, scope, route, key, d1_synced, owner, \
                 body_chunks) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            )
            .map_err(err)?;
        if chunks.len() > 1 {
            self.sql.exec("DELETE FROM slot_body", None).map_err(err)?;
            for (idx, data) in chunks.iter().enumerate().skip(1) {
                self.sql
                    .exec(
                        "INSERT INTO slot_body (idx, data) VALUES (?, ?)",
                        vec![SqlStorageValue::Integer(idx as i64), data.as_str().into()],
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
        if !self.readable()? {
            return Ok(None);
        }
        let rows: Vec<Expiry> = self
            .sql
            .exec(
                "SELECT expires_at FROM slot WHERE id = 1 AND state = 'completed'",
                None,
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
        if self.readable()? {
            self.sql.exec("DELETE FROM slot", None).map_err(err)?;
            self.sql.exec("DELETE FROM slot_body", None).map_err(err)?;
        }
        Ok(())
    }
}
