//! The scheduled approval-timeout sweep.

use super::rows::{select, ExportRow};
use super::writes::{transition_writes, Audit};
use crate::config::Config;
use crate::staging::queue::AWAITING;
use crate::staging::workflow::{transition, ExportEvent};
use crate::store::{self, int};
use serde_json::json;
use worker::{D1Database, Result};

/// Exports expired per sweep run (one small D1 batch each).
const EXPIRE_PER_RUN: i64 = 500;

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
        match db
            .batch(transition_writes(db, &before, &after, &audit)?)
            .await
        {
            Ok(_) => expired += 1,
            Err(e) => worker::console_warn!("expiring {} skipped: {e}", before.id),
        }
    }
    Ok(expired)
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
