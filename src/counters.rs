//! The counters behind `GET /v1/idempotency/stats` and `GET /metrics`:
//! executions, replays, conflicts, mismatches, failures, lease takeovers,
//! released keys and request durations, by tenant and route template.
//!
//! No request pays for a D1 write: counts are gathered in the isolate and
//! written as one batch of upserts shortly after the first of them, from
//! `waitUntil` (after the answer has gone out) — D1 sees one batch per isolate
//! per [`FLUSH_DELAY`] at most, whatever the request rate. The cost: counts made
//! in the last [`FLUSH_DELAY`] before an isolate is evicted can be lost — the
//! counters are statistics, never used for a decision.

use crate::store::{int, s, stmt};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;
use worker::{console_error, Context, D1Database, Delay, Env};

/// How long counts gather before they are written.
pub const FLUSH_DELAY: Duration = Duration::from_millis(200);

type Counts = BTreeMap<(String, String, String), i64>;

thread_local! {
    static PENDING: RefCell<Counts> = const { RefCell::new(BTreeMap::new()) };
    static FLUSH_SCHEDULED: Cell<bool> = const { Cell::new(false) };
}

/// Counts one `outcome` for `scope` (the tenant) and `template` (the route template).
pub fn record(ctx: &Context, env: &Env, scope: &str, template: &str, outcome: &str) {
    add(ctx, env, scope, template, [(outcome.to_string(), 1)]);
}

/// Counts one `outcome` and observes how long its request took.
pub fn record_timed(
    ctx: &Context,
    env: &Env,
    scope: &str,
    template: &str,
    outcome: &str,
    seconds: f64,
) {
    let [bucket, sum] = crate::metrics::observation(outcome, seconds);
    add(
        ctx,
        env,
        scope,
        template,
        [(outcome.to_string(), 1), bucket, sum],
    );
}

fn add<const N: usize>(
    ctx: &Context,
    env: &Env,
    scope: &str,
    template: &str,
    rows: [(String, i64); N],
) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        for (outcome, n) in rows {
            *p.entry((scope.to_string(), template.to_string(), outcome))
                .or_default() += n;
        }
    });
    if FLUSH_SCHEDULED.with(|f| f.get()) {
        return;
    }
    // The binding is looked up once per flush, not per count.
    let db = match env.d1(crate::config::DB_BINDING) {
        Ok(db) => db,
        Err(e) => {
            console_error!("counters: no D1 binding: {e}");
            return;
        }
    };
    FLUSH_SCHEDULED.with(|f| f.set(true));
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
