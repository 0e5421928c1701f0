//! The scheduled approval-timeout sweep.

use super::rows::{select, ExportRow};
use super::writes::{transition_writes, Audit};
use crate::config::Config;
use crate::staging::queue::AWAITING;
use crate::staging::workflow::{transition, ExportEvent};
use crate::store::{self, int};
use serde_json::json;
use worker::{D1Database, D1PreparedStatement, Result};

/// Exports expired per sweep run.
const EXPIRE_PER_RUN: i64 = 500;
/// Exports expired per D1 batch (two statements each).
const EXPIRE_PER_BATCH: usize = 25;

/// One export's expiry: its id and its writes.
type Expiry = (String, Vec<D1PreparedStatement>);

/// The states awaiting a decision as SQL literals (`'prepared', …`): the
/// names are the workflow's own, so the `(status, updated_at)` index serves
/// the sweep's query.
fn awaiting_in_sql() -> String {
    AWAITING.map(|s| format!("'{}'", s.as_str())).join(", ")
}

/// The scheduled sweep: exports still awaiting a decision (`queue::AWAITING`)
/// longer than `STAGING_APPROVAL_TIMEOUT_HOURS` are rejected with
/// reason `approval_timeout`, each with its audit row. Bounded per run; a row
/// changed concurrently is skipped (its version moved) and picked up next time.
pub async fn expire_approvals(db: &D1Database, cfg: &Config, now: i64) -> Result<usize> {
    let rows: Vec<ExportRow> = store::all(
        db,
        &select(&format!(
            "WHERE status IN ({}) AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2",
            awaiting_in_sql()
        )),
        &[
            int(now - cfg.staging_approval_timeout_ms),
            int(EXPIRE_PER_RUN),
        ],
    )
    .await?;
    let mut expired = 0;
    let mut chunk: Vec<Expiry> = Vec::with_capacity(EXPIRE_PER_BATCH);
    for before in rows {
        let Ok(to) = transition(before.status, ExportEvent::Expire, before.attempts()) else {
            continue;
        };
        let mut after = before.clone();
        after.status = to;
        after.version += 1.0;
        after.updated_at = now as f64;
        after.rejected_by = Some("system".into());
        after.rejection_reason = Some("approval_timeout".into());
        let audit = Audit {
            actor: "system",
            event: "expire",
            before: Some(&before),
            after: &after,
            detail: json!({"reason": "approval_timeout"}),
            key: None,
            now,
        };
        chunk.push((
            before.id.clone(),
            transition_writes(db, &before, &after, &audit)?,
        ));
        if chunk.len() == EXPIRE_PER_BATCH {
            expired += expire_chunk(db, std::mem::take(&mut chunk)).await;
        }
    }
    expired += expire_chunk(db, chunk).await;
    Ok(expired)
}

/// Applies several exports' expiries in one D1 batch; when that fails (one of
/// them changed since it was read: its audit row's key is taken), each is
/// applied on its own, so only the changed one is skipped. Answers how many
/// were expired.
async fn expire_chunk(db: &D1Database, chunk: Vec<Expiry>) -> usize {
    let n = chunk.len();
    if n == 0 {
        return 0;
    }
    let all = chunk.iter().flat_map(|(_, w)| w.iter().cloned()).collect();
    if db.batch(all).await.is_ok() {
        return n;
    }
    let mut expired = 0;
    for (id, writes) in chunk {
        match db.batch(writes).await {
            Ok(_) => expired += 1,
            Err(e) => worker::console_warn!("expiring {id} skipped: {e}"),
        }
    }
    expired
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sweep_expires_every_state_awaiting_a_decision() {
        assert_eq!(
            super::awaiting_in_sql(),
            "'prepared', 'under_review', 'awaiting_second_approval'"
        );
    }
}
