//! What an approval with given data would do, before anyone approves: the
//! data's findings and score, whether the score passes the threshold, the
//! changes against the prepared data (and whether one changes an amount, so
//! that a second approver would be needed), and the file posting would record.
//! The console's correction form shows it while the approver edits; nothing is
//! written.

use super::data::{validate_export_data, DataError};
use super::diff::diff;
use super::render::render_file;
use super::requests::ExportFormat;
use super::workflow::changes_an_amount;
use serde_json::{json, Value};

/// The export the candidate data would replace the data of.
pub struct Checked<'a> {
    pub export_id: &'a str,
    pub invoice_id: &'a str,
    pub format: ExportFormat,
    pub prepared: &'a Value,
}

/// The check of `candidate` (`None`: the prepared data as it is) under the
/// approval threshold `threshold` and, if on, the second-approval setting.
pub fn check(
    export: &Checked<'_>,
    candidate: Option<&Value>,
    threshold: u8,
    second_approval: bool,
) -> Result<Value, DataError> {
    let data = candidate.unwrap_or(export.prepared);
    let validation = validate_export_data(data)?;
    let changes = diff(export.prepared, data);
    let amounts = changes_an_amount(&changes);
    let file = render_file(export.format, data, export.export_id, export.invoice_id);
    Ok(json!({
        "export_id": export.export_id,
        "quality_score": validation.quality_score,
        "threshold": threshold,
        "approvable": validation.quality_score >= threshold,
        "validation_errors": validation.errors,
        "validation_warnings": validation.warnings,
        "changes": changes,
        "change_reason_required": !changes.is_empty(),
        "changes_an_amount": amounts,
        "second_approval_required": second_approval && amounts,
        "preview": {
            "file_name": file.name,
            "content_type": export.format.content_type(),
            "size": file.content.len(),
            "content": file.content,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice(total: &str) -> Value {
        json!({
            "vendor_name": "Acme", "invoice_number": "INV-7", "invoice_date": "2026-10-31",
            "currency": "EUR", "total_amount": total,
            "line_items": [{"description": "Widget", "quantity": 3, "unit_price": "10.00", "amount": "30.00"}]
        })
    }

    fn export(prepared: &Value) -> Checked<'_> {
        Checked {
            export_id: "exp_1",
            invoice_id: "inv-7",
            format: ExportFormat::Csv,
            prepared,
        }
    }

    #[test]
    fn the_prepared_data_as_it_is_changes_nothing() {
        let prepared = invoice("31.00");
        let c = check(&export(&prepared), None, 70, true).unwrap();
        assert_eq!(c["quality_score"], 65);
        assert_eq!(c["approvable"], false);
        assert_eq!(c["validation_errors"][0]["code"], "total_mismatch");
        assert_eq!(c["changes"], json!([]));
        assert_eq!(c["change_reason_required"], false);
        assert_eq!(c["second_approval_required"], false);
        assert_eq!(c["preview"]["content_type"], "text/csv; charset=utf-8");
        assert!(c["preview"]["content"].as_str().unwrap().contains("31.00"));
    }

    #[test]
    fn a_corrected_total_scores_names_its_change_and_asks_for_a_second_approval_if_set() {
        let prepared = invoice("31.00");
        let fixed = invoice("30.00");
        for (setting, second) in [(false, false), (true, true)] {
            let c = check(&export(&prepared), Some(&fixed), 70, setting).unwrap();
            assert_eq!(
                (c["quality_score"].as_u64(), &c["approvable"]),
                (Some(100), &json!(true))
            );
            assert_eq!(c["changes"][0]["path"], "$.total_amount");
            assert_eq!(c["change_reason_required"], true);
            assert_eq!(c["changes_an_amount"], true);
            assert_eq!(c["second_approval_required"], second);
            let content = c["preview"]["content"].as_str().unwrap();
            assert!(
                content.contains("30.00") && !content.contains("31.00"),
                "{content}"
            );
            assert_eq!(c["preview"]["size"], content.len());
        }
    }

    #[test]
    fn a_vendor_correction_is_no_amount_change() {
        let prepared = invoice("30.00");
        let mut fixed = prepared.clone();
        fixed["vendor_name"] = json!("Acme Ltd");
        let c = check(&export(&prepared), Some(&fixed), 70, true).unwrap();
        assert_eq!(c["changes_an_amount"], false);
        assert_eq!(c["second_approval_required"], false);
        assert_eq!(c["change_reason_required"], true);
    }

    #[test]
    fn data_that_is_not_an_invoice_is_a_data_error() {
        let prepared = invoice("30.00");
        assert!(matches!(
            check(&export(&prepared), Some(&json!({"surprise": 1})), 70, false),
            Err(DataError::UnknownField(_))
        ));
    }
}
