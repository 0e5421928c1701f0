//! The gate object's tables: their layout, their creation on the first write,
//! and the move of an object found in the legacy one-slot layout.

use super::{err, Schema, SqlSlots, COLUMNS};
use crate::idempotency::gate::{RecordKey, StoreResult};
use serde::Deserialize;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS slots (
  name TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  state TEXT NOT NULL,
  token TEXT,
  lease_expires_at REAL,
  response_status INTEGER,
  response_headers TEXT,
  response_body TEXT,
  created_at REAL NOT NULL,
  expires_at REAL,
  scope TEXT NOT NULL,
  route TEXT NOT NULL,
  key TEXT NOT NULL,
  -- 0: the answer's D1 record is written behind it, so while the slot lives an
  -- alarm (re-)writes it; the write is an upsert, so that is safe.
  d1_synced INTEGER NOT NULL DEFAULT 1,
  owner TEXT,
  body_chunks INTEGER NOT NULL DEFAULT 1,
  -- When the object's alarm must next look at this slot.
  due_at REAL
)";

/// The last fence the object issued, for any key (see `gate::next_fence`):
/// one row, kept when slots are cleared, dropped with the database.
const FENCE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS fence (
  id INTEGER PRIMARY KEY CHECK (id = 0),
  last REAL NOT NULL
)";

const DUE_INDEX: &str = "CREATE INDEX IF NOT EXISTS slots_due ON slots (due_at)";

const BODY_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS slots_body (
  name TEXT NOT NULL,
  idx INTEGER NOT NULL,
  data TEXT NOT NULL,
  PRIMARY KEY (name, idx)
)";

/// The layout before objects held many keys: one `slot` row (`id = 1`) and its
/// `slot_body`. An object found in it is moved to the new tables on first use;
/// these are the columns added to it over time, for the oldest such objects.
const LEGACY_UPGRADES: &[(&str, &str)] = &[
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

impl SqlSlots {
    pub(super) fn columns(&self, table: &str) -> StoreResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Col {
            name: String,
        }
        // Empty when the table does not exist.
        let cols: Vec<Col> = self
            .sql
            .exec("SELECT name FROM pragma_table_info(?)", vec![table.into()])
            .and_then(|c| c.to_array())
            .map_err(err)?;
        Ok(cols.into_iter().map(|c| c.name).collect())
    }

    /// Whether the tables exist (moved from the legacy layout if need be).
    pub(super) fn readable(&self) -> StoreResult<bool> {
        match self.schema.get() {
            Schema::Ready => return Ok(true),
            Schema::Absent => return Ok(false),
            Schema::Unknown => {}
        }
        if !self.columns("slots")?.is_empty() {
            self.schema.set(Schema::Ready);
            return Ok(true);
        }
        let legacy = self.columns("slot")?;
        if legacy.is_empty() {
            self.schema.set(Schema::Absent);
            return Ok(false);
        }
        self.migrate_legacy(&legacy)?;
        Ok(true)
    }

    /// Creates the tables if they do not exist.
    pub(super) fn writable(&self) -> StoreResult<()> {
        if !self.readable()? {
            self.create()?;
        }
        Ok(())
    }

    pub(super) fn create(&self) -> StoreResult<()> {
        for ddl in [SCHEMA, DUE_INDEX, BODY_SCHEMA, FENCE_SCHEMA] {
            self.sql.exec(ddl, None).map_err(err)?;
        }
        self.schema.set(Schema::Ready);
        self.fence_table.set(true);
        Ok(())
    }

    /// Moves a legacy object's one slot (see [`LEGACY_UPGRADES`]) to the new
    /// tables under its key's name, due at once: the object's alarm, set by the
    /// legacy code for that slot, finds it and re-arms for its state.
    pub(super) fn migrate_legacy(&self, legacy: &[String]) -> StoreResult<()> {
        for (col, ddl) in LEGACY_UPGRADES {
            if !legacy.iter().any(|c| c == col) {
                self.sql.exec(ddl, None).map_err(err)?;
            }
        }
        self.create()?;
        #[derive(Deserialize)]
        struct Id {
            scope: Option<String>,
            route: Option<String>,
            key: Option<String>,
        }
        let ids: Vec<Id> = self
            .sql
            .exec("SELECT scope, route, key FROM slot WHERE id = 1", None)
            .and_then(|c| c.to_array())
            .map_err(err)?;
        if let Some(id) = ids.into_iter().next() {
            let name = RecordKey {
                scope: id.scope.unwrap_or_default(),
                route: id.route.unwrap_or_default(),
                key: id.key.unwrap_or_default(),
            }
            .name();
            self.sql
                .exec(
                    &format!(
                        "INSERT INTO slots (name, {COLUMNS}, due_at) SELECT ?, fingerprint, state, \
                         token, lease_expires_at, response_status, response_headers, response_body, \
                         created_at, expires_at, COALESCE(scope, ''), COALESCE(route, ''), \
                         COALESCE(key, ''), d1_synced, owner, body_chunks, 0 FROM slot WHERE id = 1"
                    ),
                    vec![name.as_str().into()],
                )
                .map_err(err)?;
            self.sql
                .exec(
                    "INSERT INTO slots_body (name, idx, data) SELECT ?, idx, data FROM slot_body",
                    vec![name.as_str().into()],
                )
                .map_err(err)?;
        }
        for ddl in ["DROP TABLE slot", "DROP TABLE IF EXISTS slot_body"] {
            self.sql.exec(ddl, None).map_err(err)?;
        }
        Ok(())
    }

    /// Whether the fence table exists: a database made before fences has
    /// its slots but not it, until its first fence.
    pub(super) fn fenced(&self) -> StoreResult<bool> {
        if !self.fence_table.get() {
            self.fence_table.set(!self.columns("fence")?.is_empty());
        }
        Ok(self.fence_table.get())
    }

    /// Creates the fence table if this database was made before fences.
    pub(super) fn fence_writable(&self) -> StoreResult<()> {
        if !self.fenced()? {
            self.sql.exec(FENCE_SCHEMA, None).map_err(err)?;
            self.fence_table.set(true);
        }
        Ok(())
    }
}
