//! A record mirror's SQLite as a [`MirrorLog`]: the records waiting for D1, one
//! per key (its newest), each with the sequence number it got when it arrived,
//! and a count of the D1 statements the mirror issued. Every call is a
//! synchronous `exec` (see `idempotency::mirror`).

use crate::idempotency::gate::{RecordKey, StoreError, StoreResult};
use crate::idempotency::mirror::{MirrorEntry, MirrorLog, Waiting};
use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS waiting (
  scope TEXT NOT NULL,
  route TEXT NOT NULL,
  key TEXT NOT NULL,
  seq INTEGER NOT NULL,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  entry TEXT NOT NULL, -- the MirrorEntry as JSON
  PRIMARY KEY (scope, route, key)
)",
    "CREATE INDEX IF NOT EXISTS waiting_seq ON waiting (seq)",
    "CREATE TABLE IF NOT EXISTS meta (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  last_seq INTEGER NOT NULL,
  statements INTEGER NOT NULL
)",
];

pub struct SqlMirrorLog {
    sql: SqlStorage,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn num(v: i64) -> SqlStorageValue {
    SqlStorageValue::Float(v as f64)
}

fn key_args(k: &RecordKey) -> Vec<SqlStorageValue> {
    vec![
        k.scope.as_str().into(),
        k.route.as_str().into(),
        k.key.as_str().into(),
    ]
}

impl SqlMirrorLog {
    /// Creates the tables if they do not exist (a mirror lives long: this runs
    /// once per instance, not per record).
    pub fn new(sql: SqlStorage) -> StoreResult<Self> {
        for ddl in SCHEMA {
            sql.exec(ddl, None).map_err(err)?;
        }
        sql.exec(
            "INSERT OR IGNORE INTO meta (id, last_seq, statements) VALUES (1, 0, 0)",
            None,
        )
        .map_err(err)?;
        Ok(SqlMirrorLog { sql })
    }

    /// Without creating the tables (after that failed: every call then fails).
    pub fn unchecked(sql: SqlStorage) -> Self {
        SqlMirrorLog { sql }
    }

    fn rows<T: for<'de> Deserialize<'de>>(
        &self,
        query: &str,
        args: Vec<SqlStorageValue>,
    ) -> StoreResult<Vec<T>> {
        self.sql
            .exec(query, Some(args))
            .and_then(|c| c.to_array())
            .map_err(err)
    }
}

#[derive(Deserialize)]
struct N {
    n: f64,
}

impl MirrorLog for SqlMirrorLog {
    fn put(&self, entry: &MirrorEntry) -> StoreResult<bool> {
        let k = entry.record_key();
        let newer: Vec<N> = self.rows(
            "SELECT created_at AS n FROM waiting WHERE scope = ? AND route = ? AND key = ? AND created_at > ?",
            [key_args(&k), vec![num(entry.created_at)]].concat(),
        )?;
        if !newer.is_empty() {
            return Ok(false);
        }
        let seq: Vec<N> = self.rows(
            "UPDATE meta SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq AS n",
            vec![],
        )?;
        let seq = seq.first().map(|r| r.n as i64).unwrap_or(0);
        let json = serde_json::to_string(entry).map_err(err)?;
        self.sql
            .exec(
                "INSERT OR REPLACE INTO waiting (scope, route, key, seq, created_at, expires_at, entry) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                Some(
                    [
                        key_args(&k),
                        vec![
                            SqlStorageValue::Integer(seq),
                            num(entry.created_at),
                            num(entry.expires_at),
                            json.into(),
                        ],
                    ]
                    .concat(),
                ),
            )
            .map_err(err)?;
        Ok(true)
    }

    fn waiting(&self, limit: usize) -> StoreResult<Vec<Waiting>> {
        #[derive(Deserialize)]
        struct Row {
            seq: f64,
            entry: String,
        }
        let rows: Vec<Row> = self.rows(
            "SELECT seq, entry FROM waiting ORDER BY seq LIMIT ?",
            vec![SqlStorageValue::Integer(limit as i64)],
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(Waiting {
                    seq: r.seq as i64,
                    entry: serde_json::from_str(&r.entry).map_err(err)?,
                })
            })
            .collect()
    }

    fn count(&self) -> StoreResult<usize> {
        let n: Vec<N> = self.rows("SELECT count(*) AS n FROM waiting", vec![])?;
        Ok(n.first().map(|r| r.n as usize).unwrap_or(0))
    }

    fn written(&self, seqs: &[i64], statements: u32) -> StoreResult<()> {
        if !seqs.is_empty() {
            let list = serde_json::to_string(seqs).map_err(err)?;
            self.sql
                .exec(
                    "DELETE FROM waiting WHERE seq IN (SELECT value FROM json_each(?))",
                    Some(vec![list.into()]),
                )
                .map_err(err)?;
        }
        if statements > 0 {
            self.sql
                .exec(
                    "UPDATE meta SET statements = statements + ? WHERE id = 1",
                    Some(vec![SqlStorageValue::Integer(statements as i64)]),
                )
                .map_err(err)?;
        }
        Ok(())
    }

    fn drop_key(&self, key: &RecordKey, expires_at: Option<i64>) -> StoreResult<bool> {
        let expiry = expires_at.map(num).unwrap_or(SqlStorageValue::Null);
        let gone: Vec<N> = self.rows(
            "DELETE FROM waiting WHERE scope = ? AND route = ? AND key = ? \
             AND (?4 IS NULL OR expires_at = ?4) RETURNING seq AS n",
            [key_args(key), vec![expiry]].concat(),
        )?;
        Ok(!gone.is_empty())
    }

    fn statements(&self) -> StoreResult<u64> {
        let n: Vec<N> = self.rows("SELECT statements AS n FROM meta WHERE id = 1", vec![])?;
        Ok(n.first().map(|r| r.n as u64).unwrap_or(0))
    }
}
