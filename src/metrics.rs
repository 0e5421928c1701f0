//! `GET /metrics`: a tenant's idempotency counters in the Prometheus text
//! exposition format (version 0.0.4) — pure, so the format is host-tested.
//!
//! The counts come from two places in D1: live records (a gauge, counted at
//! scrape time) and the counters the Worker gathers in each isolate and writes
//! behind the answers (`counters.rs`), so they survive isolates. Every series is
//! labelled by route *template* (`POST /v1/training-jobs/{id}/events`), never
//! by a concrete id, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds (seconds) of the duration histogram's buckets; `+Inf` follows.
pub const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Each bucket's bound as its counter row names it (`f64`'s `Display`), written
/// out: formatting a float on every request costs more than the rest of a count.
const BUCKET_LABELS: [&str; 13] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10",
];

/// The counted outcomes (as stored in `idempotency_counters.outcome`), the
/// counter each is exposed as, and its help text.
pub const COUNTERS: [(&str, &str, &str); 7] = [
    (
        "executed",
        "idemgate_executions_total",
        "First executions: the handler ran and its answer was stored.",
    ),
    (
        "replayed",
        "idemgate_replays_total",
        "Stored answers sent again (Idempotent-Replayed: true).",
    ),
    (
        "conflict",
        "idemgate_conflicts_total",
        "409 answers: the key's first request was still running.",
    ),
    (
        "mismatch",
        "idemgate_mismatches_total",
        "422 answers: the key was reused with another payload.",
    ),
    (
        "failed",
        "idemgate_execution_failures_total",
        "Requests answered with a failure that is not stored (5xx, a throw, a storage failure): the key is released.",
    ),
    (
        "takeover",
        "idemgate_lease_takeovers_total",
        "Executions that took over a dead holder's expired lease.",
    ),
    (
        "released",
        "idemgate_keys_released_total",
        "Keys released with DELETE /v1/idempotency/keys/{key}.",
    ),
];

/// The outcomes whose request durations are observed.
pub const TIMED: [&str; 2] = ["executed", "replayed"];

const DURATION: &str = "idemgate_request_duration_seconds";
const RECORDS: &str = "idemgate_records";

/// The counter rows one observation of `seconds` for `outcome` adds: its
/// bucket (not cumulative; summed at scrape time) and its sum in microseconds.
pub fn observation(outcome: &str, seconds: f64) -> [(String, i64); 2] {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    let bucket = DURATION_BUCKETS
        .iter()
        .position(|le| seconds <= *le)
        .map_or("+Inf", |i| BUCKET_LABELS[i]);
    [
        (format!("duration:{outcome}:{bucket}"), 1),
        (
            format!("duration:{outcome}:sum_us"),
            (seconds * 1e6).round() as i64,
        ),
    ]
}

/// One histogram's data: per-bucket counts (the last is `+Inf`) and the sum.
#[derive(Default)]
struct Histogram {
    buckets: [i64; DURATION_BUCKETS.len() + 1],
    sum_us: i64,
}

/// Escapes a label value (backslash, double quote, line feed).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the exposition from live records (`route template`, response
/// status, count) and counter rows (`route template`, outcome, count). Rows for
/// the same series are summed; unknown outcomes are ignored.
pub fn render(records: &[(String, u16, i64)], counters: &[(String, String, i64)]) -> String {
    let mut out = String::new();
    let mut live: BTreeMap<(&str, u16), i64> = BTreeMap::new();
    for (route, status, n) in records {
        *live.entry((route, *status)).or_default() += n;
    }
    header(
        &mut out,
        RECORDS,
        "gauge",
        "Live idempotency records (stored answers not yet expired) by route template and response status.",
    );
    for ((route, status), n) in &live {
        let _ = writeln!(
            out,
            "{RECORDS}{{route=\"{}\",status=\"{status}\"}} {n}",
            label(route)
        );
    }
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut hists: BTreeMap<(&str, &str), Histogram> = BTreeMap::new();
    for (route, outcome, n) in counters {
        if let Some(rest) = outcome.strip_prefix("duration:") {
            let Some((timed, bucket)) = rest.split_once(':') else {
                continue;
            };
            let Some(timed) = TIMED.iter().find(|t| **t == timed) else {
                continue;
            };
            let h = hists.entry((timed, route)).or_default();
            if bucket == "sum_us" {
                h.sum_us += n;
            } else if bucket == "+Inf" {
                h.buckets[DURATION_BUCKETS.len()] += n;
            } else if let Some(i) = DURATION_BUCKETS
                .iter()
                .position(|le| le.to_string() == bucket)
            {
                h.buckets[i] += n;
            }
        } else if let Some((_, name, _)) = COUNTERS.iter().find(|(o, _, _)| o == outcome) {
            *counts.entry((name, route)).or_default() += n;
        }
    }
    for (_, name, help) in COUNTERS {
        header(&mut out, name, "counter", help);
        for ((_, route), n) in counts.iter().filter(|((m, _), _)| *m == name) {
            let _ = writeln!(out, "{name}{{route=\"{}\"}} {n}", label(route));
        }
    }
    header(
        &mut out,
        DURATION,
        "histogram",
        "Time from the request reaching the Worker to its answer, for first executions and replays.",
    );
    for ((outcome, route), h) in &hists {
        let labels = format!("route=\"{}\",outcome=\"{outcome}\"", label(route));
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = DURATION_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{DURATION}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{DURATION}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{DURATION}_count{{{labels}}} {cumulative}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_labels_are_the_bounds_as_rows_always_named_them() {
        for (le, label) in DURATION_BUCKETS.iter().zip(BUCKET_LABELS) {
            assert_eq!(le.to_string(), label);
        }
        assert_eq!(
            observation("executed", 0.003)[0].0,
            "duration:executed:0.005"
        );
        assert_eq!(observation("executed", 1.0)[0].0, "duration:executed:1");
        assert_eq!(observation("executed", 11.0)[0].0, "duration:executed:+Inf");
    }

    fn rows(observations: &[(&str, &str, f64)]) -> Vec<(String, String, i64)> {
        observations
            .iter()
            .flat_map(|(route, outcome, secs)| {
                observation(outcome, *secs)
                    .into_iter()
                    .map(|(o, n)| (route.to_string(), o, n))
            })
            .collect()
    }

    #[test]
    fn counters_are_named_by_prometheus_conventions_and_labelled_by_template() {
        let text = render(
            &[
                ("POST /v1/documents".into(), 201, 2),
                ("POST /v1/documents".into(), 201, 1),
                ("POST /v1/documents".into(), 422, 1),
            ],
            &[
                (
                    "POST /v1/training-jobs/{id}/events".into(),
                    "replayed".into(),
                    3,
                ),
                (
                    "POST /v1/training-jobs/{id}/events".into(),
                    "replayed".into(),
                    4,
                ),
                ("POST /v1/documents".into(), "mismatch".into(), 1),
                ("POST /v1/documents".into(), "something-else".into(), 9),
            ],
        );
        assert!(text.contains("# TYPE idemgate_records gauge\n"), "{text}");
        assert!(text.contains("idemgate_records{route=\"POST /v1/documents\",status=\"201\"} 3\n"));
        assert!(text.contains("idemgate_records{route=\"POST /v1/documents\",status=\"422\"} 1\n"));
        assert!(
            text.contains(
                "idemgate_replays_total{route=\"POST /v1/training-jobs/{id}/events\"} 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("idemgate_mismatches_total{route=\"POST /v1/documents\"} 1\n"));
        assert!(!text.contains("something-else"));
        for (_, name, _) in COUNTERS {
            assert!(name.starts_with("idemgate_") && name.ends_with("_total"));
            assert!(text.contains(&format!("# TYPE {name} counter\n")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn durations_form_a_cumulative_histogram_with_sum_and_count() {
        let text = render(
            &[],
            &rows(&[
                ("POST /functions/v1/{name}", "executed", 0.004),
                ("POST /functions/v1/{name}", "executed", 0.030),
                ("POST /functions/v1/{name}", "executed", 60.0),
                ("POST /functions/v1/{name}", "replayed", 0.0),
            ]),
        );
        let l = "route=\"POST /functions/v1/{name}\",outcome=\"executed\"";
        for (le, n) in [
            ("0.001", 0),
            ("0.005", 1),
            ("0.025", 1),
            ("0.05", 2),
            ("10", 2),
            ("+Inf", 3),
        ] {
            let line = format!("idemgate_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains(&format!(
            "idemgate_request_duration_seconds_count{{{l}}} 3\n"
        )));
        assert!(text.contains(&format!(
            "idemgate_request_duration_seconds_sum{{{l}}} 60.034\n"
        )));
        let r = "route=\"POST /functions/v1/{name}\",outcome=\"replayed\"";
        assert!(text.contains(&format!(
            "idemgate_request_duration_seconds_bucket{{{r},le=\"0.001\"}} 1\n"
        )));
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&[("POST /a\"b\\c\nd".into(), 200, 1)], &[]);
        assert!(text.contains("route=\"POST /a\\\"b\\\\c\\nd\""), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("idemgate_records"))
                .count(),
            1
        );
    }
}
