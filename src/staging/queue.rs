//! The approval queue's reading of the exports: which states a list asks for,
//! what an approver decides with (the invoice's header fields), and when an
//! export waiting for a decision is rejected by the approval-timeout sweep.

use super::workflow::ExportState;
use serde_json::{json, Map, Value};

/// The states awaiting a decision (`prepared`, `under_review` and
/// `awaiting_second_approval`): the approvers' queue, and what the
/// approval-timeout sweep expires.
pub const AWAITING: [ExportState; 3] = [
    ExportState::Prepared,
    ExportState::UnderReview,
    ExportState::AwaitingSecondApproval,
];

/// A list's `status=` filter: one state or several, comma-separated
/// (`prepared,under_review`). An empty or unknown name is refused, naming the
/// states there are.
pub fn parse_status_filter(raw: &str) -> Result<Vec<ExportState>, String> {
    let mut states = Vec::new();
    for name in raw.split(',') {
        let state = ExportState::parse(name.trim()).ok_or_else(|| {
            let all: Vec<&str> = ExportState::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "status {name:?} is not one of {} (several: comma-separated)",
                all.join(", ")
            )
        })?;
        if !states.contains(&state) {
            states.push(state);
        }
    }
    Ok(states)
}

/// The states as one text a SQL `instr` finds each in: `,prepared,under_review,`.
pub fn status_list(states: &[ExportState]) -> String {
    let mut out = String::from(",");
    for s in states {
        out.push_str(s.as_str());
        out.push(',');
    }
    out
}

/// The invoice's header fields an approver decides with, from the export's
/// data (the approved data once there is some): vendor, invoice number and
/// date, total and currency, each `null` when the data lacks it.
pub fn summary(data: &Value) -> Value {
    let mut out = Map::new();
    for field in [
        "vendor_name",
        "invoice_number",
        "invoice_date",
        "total_amount",
        "currency",
    ] {
        let v = data.get(field).cloned().unwrap_or(Value::Null);
        out.insert(
            field.into(),
            if v.is_object() || v.is_array() {
                Value::Null
            } else {
                v
            },
        );
    }
    json!(out)
}

/// When the approval-timeout sweep rejects an export still waiting for a
/// decision: `timeout_ms` after its last change. `None` for one not waiting.
pub fn approval_deadline(status: ExportState, updated_at: i64, timeout_ms: i64) -> Option<i64> {
    AWAITING
        .contains(&status)
        .then(|| updated_at.saturating_add(timeout_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_names_one_state_or_several() {
        use ExportState as S;
        assert_eq!(parse_status_filter("approved"), Ok(vec![S::Approved]));
        assert_eq!(
            parse_status_filter("prepared,under_review"),
            Ok(vec![S::Prepared, S::UnderReview])
        );
        assert_eq!(
            parse_status_filter("prepared, prepared ,under_review"),
            Ok(vec![S::Prepared, S::UnderReview])
        );
        for bad in [
            "",
            "prepared,",
            "Approved",
            "prepared,nope",
            ",",
            "under review",
        ] {
            let e = parse_status_filter(bad).unwrap_err();
            assert!(
                e.contains("is not one of prepared, under_review, awaiting_second_approval"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            status_list(&AWAITING),
            ",prepared,under_review,awaiting_second_approval,"
        );
        // No state's name is inside another's, so `instr` finds exactly the listed ones.
        for a in ExportState::ALL {
            for b in ExportState::ALL {
                let found = status_list(&[a]).contains(&format!(",{},", b.as_str()));
                assert_eq!(found, a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn the_summary_is_the_invoice_header_and_nothing_else() {
        let data = json!({"vendor_name": "Acme", "invoice_number": "INV-1", "invoice_date": "2026-10-31",
            "total_amount": "30.00", "currency": "EUR", "line_items": [{"amount": "30.00"}],
            "notes": "x"});
        assert_eq!(
            summary(&data),
            json!({"vendor_name": "Acme", "invoice_number": "INV-1", "invoice_date": "2026-10-31",
                "total_amount": "30.00", "currency": "EUR"})
        );
        let odd = json!({"vendor_name": {"nested": 1}, "total_amount": 1100.0});
        assert_eq!(
            summary(&odd),
            json!({"vendor_name": null, "invoice_number": null, "invoice_date": null,
                "total_amount": 1100.0, "currency": null})
        );
        assert_eq!(summary(&json!(null))["vendor_name"], Value::Null);
    }

    #[test]
    fn only_exports_awaiting_a_decision_have_a_deadline() {
        for s in ExportState::ALL {
            let d = approval_deadline(s, 1_000, 3_600_000);
            assert_eq!(d.is_some(), AWAITING.contains(&s), "{s:?}");
        }
        assert_eq!(
            approval_deadline(ExportState::UnderReview, 1_000, 3_600_000),
            Some(3_601_000)
        );
        assert_eq!(
            approval_deadline(ExportState::Prepared, i64::MAX, 1),
            Some(i64::MAX)
        );
    }
}
