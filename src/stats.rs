//! `GET /v1/idempotency/stats`: records by route and state, and the replay,
//! conflict and mismatch counters, for the caller's tenant only.

use crate::http;
use crate::idempotency::scope::Scope;
use crate::store::{self, int, s};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{D1Database, Date, Response, Result};

#[derive(Deserialize)]
struct RecordCount {
    route: String,
    response_status: f64,
    live: f64,
    n: f64,
}

#[derive(Deserialize)]
struct CounterRow {
    route: String,
    outcome: String,
    count: f64,
}

fn route_entry<'a>(routes: &'a mut Map<String, Value>, route: &str) -> &'a mut Value {
    routes.entry(route.to_string()).or_insert_with(|| {
        json!({"completed": 0, "expired": 0, "by_response_status": {}, "replayed": 0, "conflict": 0, "mismatch": 0})
    })
}

fn add(v: &mut Value, by: i64) {
    *v = json!(v.as_i64().unwrap_or(0) + by);
}

pub async fn stats(db: &D1Database, tenant: &str) -> Result<Response> {
    let now = Date::now().as_millis() as i64;
    let records: Vec<RecordCount> = store::all(db,
        "SELECT route, response_status, (expires_at > ?2) AS live, COUNT(*) AS n FROM idempotency_records \
         WHERE (scope = ?3 OR substr(scope, 1, length(?3) + 1) = ?3 || ':') GROUP BY route, response_status, live",
        &[s(tenant), int(now), s(&Scope::tenant_prefix(tenant))]).await?;
    let counters: Vec<CounterRow> = store::all(
        db,
        "SELECT route, outcome, count FROM idempotency_counters WHERE scope = ?1",
        &[s(tenant)],
    )
    .await?;
    let mut routes = Map::new();
    let mut totals =
        json!({"completed": 0, "expired": 0, "replayed": 0, "conflict": 0, "mismatch": 0});
    for r in records {
        let n = r.n as i64;
        let state = if r.live > 0.0 { "completed" } else { "expired" };
        let e = route_entry(&mut routes, &r.route);
        add(&mut e[state], n);
        if r.live > 0.0 {
            add(
                &mut e["by_response_status"][(r.response_status as i64).to_string()],
                n,
            );
        }
        add(&mut totals[state], n);
    }
    for c in counters {
        let n = c.count as i64;
        add(
            &mut route_entry(&mut routes, &c.route)[c.outcome.as_str()],
            n,
        );
        add(&mut totals[c.outcome.as_str()], n);
    }
    Ok(http::json(
        200,
        &json!({"tenant": tenant, "totals": totals, "routes": routes}),
    ))
}
