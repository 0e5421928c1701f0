//! Replay, conflict and mismatch counters for `GET /v1/idempotency/stats`.
//!
//! A replay must not pay for a D1 write, so counts are gathered in the isolate and
//! written as one batch of upserts shortly after the first of them, from
//! `waitUntil` (after the answer has gone out). The cost: counts made in the last
//! [`FLUSH_DELAY`] before an isolate is evicted can be lost — the counters are
//! statistics, never used for a decision.

use crate::store::{int, s, stmt};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;
use worker::{console_error, Context, D1Database, Delay};

/// How long counts gather before they are written.
pub const FLUSH_DELAY: Duration = Duration::from_millis(200);

type Counts = BTreeMap<(String, String, String), i64>;

thread_local! {
    static PENDING: RefCell<Counts> = const { RefCell::new(BTreeMap::new()) };
    static FLUSH_SCHEDULED: Cell<bool> = const { Cell::new(false) };
}

/// Counts one `outcome` for `scope` and `route`.
pub fn record(ctx: &Context, db: D1Database, scope: &str, route: &str, outcome: &str) {
    PENDING.with(|p| {
        *p.borrow_mut()
            .entry((scope.to_string(), route.to_string(), outcome.to_string()))
            .or_default() += 1
    });
    if FLUSH_SCHEDULED.with(|f| f.replace(true)) {
        return;
    }
    ctx.wait_until(async move {
        Delay::from(FLUSH_DELAY).await;
        FLUSH_SCHEDULED.with(|f| f.set(false));
        let counts = PENDING.with(|p| p.take());
        if let Err(e) = flush(&db, counts).await {
            console_error!("counter flush failed: {e}");
        }
    });
}

async fn flush(db: &D1Database, counts: Counts) -> worker::Result<()> {
    let statements = counts
        .into_iter()
        .map(|((scope, route, outcome), n)| {
            stmt(
                db,
                "INSERT INTO idempotency_counters (scope, route, outcome, count) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (scope, route, outcome) DO UPDATE SET count = count + excluded.count",
                &[s(&scope), s(&route), s(&outcome), int(n)],
            )
        })
        .collect::<worker::Result<Vec<_>>>()?;
    if !statements.is_empty() {
        db.batch(statements).await?;
    }
    Ok(())
}
