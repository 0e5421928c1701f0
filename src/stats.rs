//! `GET /v1/idempotency/stats` (JSON) and `GET /metrics` (Prometheus text):
//! records by route template and state, and the counters the Worker writes
//! behind its answers, for the caller's tenant only.

use crate::commands;
use crate::http;
use crate::idempotency::scope::Scope;
use crate::metrics;
use crate::store::{self, int, s};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{D1Database, Date, Headers, Response, ResponseBuilder, Result};

/// Live and expired records of one stored route and response status.
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

/// The outcomes `/v1/idempotency/stats` shows per route (the duration rows are
/// for `/metrics`).
const SHOWN: [&str; 7] = [
    "executed", "replayed", "conflict", "mismatch", "failed", "takeover", "released",
];

/// The route template of a stored route: records keep the concrete route
/// (`POST /v1/training-jobs/job_1/events`, part of the key's identity), stats
/// and metrics group by its template (`POST /v1/training-jobs/{id}/events`). A
/// route no command matches is kept as it is.
pub fn route_template(route: &str) -> String {
    route
        .split_once(' ')
        .and_then(|(method, path)| {
            commands::match_path(path).filter(|k| k.endpoint.method() == method)
        })
        .map_or_else(|| route.to_string(), |k| k.endpoint.template().to_string())
}

fn route_entry<'a>(routes: &'a mut Map<String, Value>, route: &str) -> &'a mut Value {
    routes.entry(route.to_string()).or_insert_with(|| {
        let mut e = json!({"completed": 0, "expired": 0, "by_response_status": {}});
        for o in SHOWN {
            e[o] = json!(0);
        }
        e
    })
}

fn add(v: &mut Value, by: i64) {
    *v = json!(v.as_i64().unwrap_or(0) + by);
}

/// The stats document from the tenant's rows, grouped by route template.
fn summarize(tenant: &str, records: &[RecordCount], counters: &[CounterRow]) -> Value {
    let mut routes = Map::new();
    let mut totals = json!({"completed": 0, "expired": 0});
    for o in SHOWN {
        totals[o] = json!(0);
    }
    for r in records {
        let n = r.n as i64;
        let state = if r.live > 0.0 { "completed" } else { "expired" };
        let e = route_entry(&mut routes, &route_template(&r.route));
        add(&mut e[state], n);
        if r.live > 0.0 {
            add(
                &mut e["by_response_status"][(r.response_status as i64).to_string()],
                n,
            );
        }
        add(&mut totals[state], n);
    }
    for c in counters
        .iter()
        .filter(|c| SHOWN.contains(&c.outcome.as_str()))
    {
        let n = c.count as i64;
        let e = route_entry(&mut routes, &route_template(&c.route));
        add(&mut e[c.outcome.as_str()], n);
        add(&mut totals[c.outcome.as_str()], n);
    }
    json!({"tenant": tenant, "totals": totals, "routes": routes})
}

/// The tenant's records (one row per stored route, status and liveness) and counters.
async fn read(db: &D1Database, tenant: &str) -> Result<(Vec<RecordCount>, Vec<CounterRow>)> {
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
    Ok((records, counters))
}

pub async fn stats(db: &D1Database, tenant: &str) -> Result<Response> {
    let (records, counters) = read(db, tenant).await?;
    Ok(http::json(200, &summarize(tenant, &records, &counters)))
}

/// `GET /metrics`: the same counts in the Prometheus text format.
pub async fn prometheus(db: &D1Database, tenant: &str) -> Result<Response> {
    let (records, counters) = read(db, tenant).await?;
    let live: Vec<(String, u16, i64)> = records
        .iter()
        .filter(|r| r.live > 0.0)
        .map(|r| {
            (
                route_template(&r.route),
                r.response_status as u16,
                r.n as i64,
            )
        })
        .collect();
    let counted: Vec<(String, String, i64)> = counters
        .into_iter()
        .map(|c| (route_template(&c.route), c.outcome, c.count as i64))
        .collect();
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/plain; version=0.0.4; charset=utf-8");
    Ok(ResponseBuilder::new()
        .with_status(200)
        .with_headers(headers)
        .fixed(metrics::render(&live, &counted).into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(route: &str, status: u16, live: bool, n: i64) -> RecordCount {
        RecordCount {
            route: route.into(),
            response_status: status.into(),
            live: if live { 1.0 } else { 0.0 },
            n: n as f64,
        }
    }

    fn counter(route: &str, outcome: &str, count: i64) -> CounterRow {
        CounterRow {
            route: route.into(),
            outcome: outcome.into(),
            count: count as f64,
        }
    }

    #[test]
    fn stats_group_concrete_routes_by_their_template() {
        let s = summarize(
            "acme",
            &[
                record("POST /v1/training-jobs/job_1/events", 200, true, 2),
                record("POST /v1/training-jobs/job_2/events", 200, true, 3),
                record("POST /v1/training-jobs/job_2/events", 409, false, 1),
                record("POST /functions/v1/charge", 201, true, 1),
                record("POST /v1/documents", 201, true, 4),
            ],
            &[
                counter("POST /v1/training-jobs/job_1/events", "replayed", 5),
                counter("POST /v1/training-jobs/job_2/events", "replayed", 1),
                counter("POST /v1/training-jobs/{id}/events", "mismatch", 1),
                counter("POST /v1/documents", "duration:executed:0.005", 4),
            ],
        );
        let routes = s["routes"].as_object().unwrap();
        let mut names: Vec<&str> = routes.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "POST /functions/v1/{name}",
                "POST /v1/documents",
                "POST /v1/training-jobs/{id}/events"
            ]
        );
        let events = &routes["POST /v1/training-jobs/{id}/events"];
        assert_eq!(events["completed"], 5);
        assert_eq!(events["expired"], 1);
        assert_eq!(events["by_response_status"], json!({"200": 5}));
        assert_eq!(
            (events["replayed"].as_i64(), events["mismatch"].as_i64()),
            (Some(6), Some(1))
        );
        assert_eq!(s["totals"]["completed"], 10);
        assert!(routes["POST /v1/documents"]
            .get("duration:executed:0.005")
            .is_none());
    }

    #[test]
    fn a_route_no_command_matches_is_kept_as_it_is() {
        assert_eq!(route_template("POST /v1/nope/1"), "POST /v1/nope/1");
        assert_eq!(
            route_template("PUT /v1/staging/exports/exp_1/approve"),
            "PUT /v1/staging/exports/{id}/approve"
        );
        // The method must match the command's too.
        assert_eq!(route_template("GET /v1/documents"), "GET /v1/documents");
    }
}
