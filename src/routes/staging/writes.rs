//! The D1 statements of the workflow: a staged export's INSERT, a transition's
//! versioned UPDATE, and the audit row that goes with every change.

use super::rows::{written_by, ExportRow};
use crate::store::{int, s, stmt};
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Result};

/// One audit row: who did what, from which state to which, with snapshots.
pub(super) struct Audit<'a> {
    pub actor: &'a str,
    pub event: &'a str,
    pub before: Option<&'a ExportRow>,
    pub after: &'a ExportRow,
    pub detail: Value,
    pub key: Option<&'a str>,
    pub now: i64,
}

/// `staging_audit`'s columns, in the order of [`Audit::values`].
const AUDIT_COLUMNS: &[&str] = &[
    "export_id",
    "seq",
    "tenant",
    "actor",
    "event",
    "from_state",
    "to_state",
    "before_snapshot",
    "after_snapshot",
    "detail",
    "idempotency_key",
    "created_at",
];

impl Audit<'_> {
    fn values(&self) -> Vec<JsValue> {
        vec![
            s(&self.after.id),
            JsValue::from_f64(self.after.version),
            s(&self.after.tenant),
            s(self.actor),
            s(self.event),
            self.before.map_or(JsValue::NULL, |b| s(b.status.as_str())),
            s(self.after.status.as_str()),
            self.before
                .map_or(JsValue::NULL, |b| s(&b.to_json().to_string())),
            s(&self.after.to_json().to_string()),
            s(&self.detail.to_string()),
            self.key.map_or(JsValue::NULL, s),
            int(self.now),
        ]
    }
}

/// Multi-row INSERT statements, as many rows each as fit D1's 100 bound values.
fn multi_insert(
    db: &D1Database,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<JsValue>>,
) -> Result<Vec<D1PreparedStatement>> {
    let width = columns.len();
    let per = (100 / width).max(1);
    rows.chunks(per)
        .map(|chunk| {
            let tuples: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let ps: Vec<String> =
                        (1..=width).map(|c| format!("?{}", r * width + c)).collect();
                    format!("({})", ps.join(", "))
                })
                .collect();
            let args: Vec<JsValue> = chunk.iter().flatten().cloned().collect();
            stmt(
                db,
                &format!(
                    "INSERT INTO {table} ({}) VALUES {}",
                    columns.join(", "),
                    tuples.join(", ")
                ),
                &args,
            )
        })
        .collect()
}

/// Inserts freshly staged exports (the columns a transition writes stay NULL).
pub(super) fn insert_exports(
    db: &D1Database,
    rows: &[ExportRow],
) -> Result<Vec<D1PreparedStatement>> {
    let columns: Vec<&str> = written_by(true).map(|c| c.name).collect();
    let values = rows
        .iter()
        .map(|r| written_by(true).map(|c| (c.bind)(r)).collect())
        .collect();
    multi_insert(db, "staged_exports", &columns, values)
}

pub(super) fn insert_audits(
    db: &D1Database,
    audits: &[Audit<'_>],
) -> Result<Vec<D1PreparedStatement>> {
    multi_insert(
        db,
        "staging_audit",
        AUDIT_COLUMNS,
        audits.iter().map(Audit::values).collect(),
    )
}

/// The state change of `before` into `after` and its audit row. The update only
/// applies at the version read; the audit row's primary key (export, seq = new
/// version) makes a concurrent second transition fail the whole batch.
pub(super) fn transition_writes(
    db: &D1Database,
    before: &ExportRow,
    after: &ExportRow,
    audit: &Audit<'_>,
) -> Result<Vec<D1PreparedStatement>> {
    let sets: Vec<String> = written_by(false)
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", c.name, i + 1))
        .collect();
    let mut args: Vec<JsValue> = written_by(false).map(|c| (c.bind)(after)).collect();
    args.push(s(&before.id));
    args.push(JsValue::from_f64(before.version));
    let n = sets.len();
    let mut writes = insert_audits(db, std::slice::from_ref(audit))?;
    writes.push(stmt(
        db,
        &format!(
            "UPDATE staged_exports SET {} WHERE id = ?{} AND version = ?{}",
            sets.join(", "),
            n + 1,
            n + 2
        ),
        &args,
    )?);
    Ok(writes)
}
