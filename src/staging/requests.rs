//! Parsing and validation of the staging request bodies:
//!
//! - `POST /v1/staging/exports` → [`parse_stage_request`]:
//!   `{"invoice_id": "inv_1", "export_format": "csv", "destination_system": "netsuite",
//!   "export_data": {…}, "max_retries": 3}`
//! - `POST /v1/staging/batches` → [`parse_batch_request`]: `{"exports": [{…}, …]}`,
//!   each item then checked with [`stage_request_from_value`]
//! - `PUT …/review` → [`parse_review_request`]: `{"comments": "…"}`, optional
//! - `PUT …/approve` → [`parse_approve_request`]:
//!   `{"approved_data": {…}, "change_reason": "…", "approval_comments": "…"}`, all
//!   optional
//! - `PUT …/reject`, `POST …/rollback` → [`parse_reason_request`]: `{"reason": "…"}`
//! - `POST …/post` → [`parse_post_request`]: no fields, `{}` or empty
//!
//! The rules every typed body follows are [`crate::request_body`]'s; here, in
//! addition, the review, approve, reason and post bodies may also be empty (or
//! only whitespace), which counts as `{}`.
//!
//! Field paths in errors are dotted from the top of the body; a batch item's fields
//! carry the item's prefix (`exports[3].invoice_id`).

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::request_body::{
    field, invalid, join, missing, not_an_object, parse_object, parse_optional_object,
    reject_unknown, required_text, text, u32_in, RequestError,
};

/// Longest accepted `invoice_id`, in chars.
pub const MAX_INVOICE_ID_CHARS: usize = 200;
/// Longest accepted `destination_system`, in chars.
pub const MAX_DESTINATION_CHARS: usize = 200;
/// Longest accepted free text (`reason`, `comments`, `change_reason`,
/// `approval_comments`), in chars.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Accepted `max_retries`.
pub const MAX_RETRIES_RANGE: RangeInclusive<u32> = 0..=10;
/// `max_retries` when the body has none.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// The file format an export is rendered in. Serialised, and stored in
/// `staged_exports.export_format`, as `"csv"` or `"json"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Json,
}

impl ExportFormat {
    /// The wire and stored name: `csv` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
        }
    }

    /// The inverse of [`ExportFormat::as_str`]; exact, case-sensitive.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The file name extension, without the dot: `csv` or `json`.
    pub fn ext(self) -> &'static str {
        self.as_str()
    }

    /// The `content-type` of a rendered file (CSV is UTF-8 text).
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
        }
    }
}

/// A validated stage body (one export).
///
/// `invoice_id` is non-blank and at most [`MAX_INVOICE_ID_CHARS`] chars,
/// `destination_system` non-blank and at most [`MAX_DESTINATION_CHARS`];
/// `max_retries` is in [`MAX_RETRIES_RANGE`] ([`DEFAULT_MAX_RETRIES`] when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRequest {
    pub invoice_id: String,
    pub export_format: ExportFormat,
    pub destination_system: String,
    /// A JSON object, otherwise unchecked: its fields are validated (and scored) by
    /// the data module, which reports its own errors.
    pub export_data: Value,
    pub max_retries: u32,
}

/// A validated `PUT …/approve` body; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApproveRequest {
    /// The corrected data to approve instead of the prepared data; a JSON object
    /// when present, its contents unchecked here.
    pub approved_data: Option<Value>,
    /// Why the data was changed; non-blank, at most [`MAX_TEXT_CHARS`]. Whether it
    /// is required (when `approved_data` differs) is the caller's rule.
    pub change_reason: Option<String>,
    /// Non-blank, at most [`MAX_TEXT_CHARS`].
    pub approval_comments: Option<String>,
}

/// A `POST /v1/staging/batches` body whose shape is checked but whose items are
/// not: each is raw JSON for [`stage_request_from_value`] with the prefix
/// `exports[i]`, so one bad item does not reject the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// Non-empty, at most the `max_batch` given to [`parse_batch_request`].
    pub exports: Vec<Value>,
}

/// Every stage field. `prepared_by` is deliberately absent: see
/// [`parse_stage_request`].
const STAGE_FIELDS: [&str; 5] = [
    "invoice_id",
    "export_format",
    "destination_system",
    "export_data",
    "max_retries",
];
const APPROVE_FIELDS: [&str; 3] = ["approved_data", "change_reason", "approval_comments"];
const REASON_FIELDS: [&str; 1] = ["reason"];
const REVIEW_FIELDS: [&str; 1] = ["comments"];
const BATCH_FIELDS: [&str; 1] = ["exports"];

/// Parses and validates a `POST /v1/staging/exports` body.
///
/// Checked in order: unknown fields, `invoice_id`, `export_format`,
/// `destination_system`, `export_data`, `max_retries`.
///
/// `prepared_by` is not a body field: the preparer is the authenticated caller (the
/// token's subject), so a client cannot stage an export in someone else's name. A
/// body naming it, even as `null`, is rejected with
/// `UnknownField("prepared_by")` (unless an alphabetically earlier unknown field
/// is reported first).
pub fn parse_stage_request(body: &[u8]) -> Result<StageRequest, RequestError> {
    let obj = parse_object(body)?;
    stage_from_map(&obj, "")
}

/// Validates one export given as a JSON value: a batch item.
///
/// The same rules as [`parse_stage_request`], with every field path prefixed by
/// `path_prefix` and a dot: `stage_request_from_value(item, "exports[3]")` reports
/// `exports[3].invoice_id`. The prefix may also end with the dot already
/// (`"exports[3]."`), or be empty for a top-level body. A non-object item is
/// `InvalidField` at the prefix itself (`exports[3]`: must be a JSON object), or
/// `InvalidJson` when the prefix is empty.
pub fn stage_request_from_value(
    v: &Value,
    path_prefix: &str,
) -> Result<StageRequest, RequestError> {
    match v {
        Value::Object(obj) => stage_from_map(obj, path_prefix),
        _ if path_prefix.is_empty() => Err(not_an_object()),
        _ => Err(invalid(
            path_prefix.trim_end_matches('.'),
            "must be a JSON object",
        )),
    }
}

fn stage_from_map(obj: &Map<String, Value>, prefix: &str) -> Result<StageRequest, RequestError> {
    let path = |name: &str| join(prefix, name);
    reject_unknown(obj, &STAGE_FIELDS, prefix)?;

    let invoice_id = required_text(
        obj,
        "invoice_id",
        &path("invoice_id"),
        Some(MAX_INVOICE_ID_CHARS),
    )?;
    let export_format = match field(obj, "export_format") {
        None => return Err(missing(path("export_format"))),
        Some(v) => v
            .as_str()
            .and_then(ExportFormat::parse)
            .ok_or_else(|| invalid(path("export_format"), "must be \"csv\" or \"json\""))?,
    };
    let destination_system = required_text(
        obj,
        "destination_system",
        &path("destination_system"),
        Some(MAX_DESTINATION_CHARS),
    )?;
    let export_data = match field(obj, "export_data") {
        None => return Err(missing(path("export_data"))),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(invalid(path("export_data"), "must be a JSON object")),
    };
    let max_retries = match field(obj, "max_retries") {
        None => DEFAULT_MAX_RETRIES,
        Some(v) => u32_in(v, &path("max_retries"), MAX_RETRIES_RANGE)?,
    };
    Ok(StageRequest {
        invoice_id,
        export_format,
        destination_system,
        export_data,
        max_retries,
    })
}

/// Parses and validates a `PUT …/approve` body. An empty body approves the
/// prepared data as it is, with no reason or comments.
///
/// Checked in order: unknown fields, `approved_data`, `change_reason`,
/// `approval_comments`.
pub fn parse_approve_request(body: &[u8]) -> Result<ApproveRequest, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &APPROVE_FIELDS, "")?;
    let approved_data = match field(&obj, "approved_data") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(invalid("approved_data", "must be a JSON object")),
    };
    Ok(ApproveRequest {
        approved_data,
        change_reason: optional_text(&obj, "change_reason")?,
        approval_comments: optional_text(&obj, "approval_comments")?,
    })
}

/// Parses a `{"reason": "…"}` body (`PUT …/reject`, `POST …/rollback`).
///
/// `reason` is non-blank and at most [`MAX_TEXT_CHARS`] chars. When `required`, an
/// absent or `null` reason — an empty body included — is `MissingField("reason")`
/// and the result is always `Some`; otherwise it is `None`.
pub fn parse_reason_request(body: &[u8], required: bool) -> Result<Option<String>, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &REASON_FIELDS, "")?;
    match optional_text(&obj, "reason")? {
        None if required => Err(missing("reason")),
        reason => Ok(reason),
    }
}

/// Parses a `PUT …/review` body: optional `{"comments": "…"}`, non-blank and at most
/// [`MAX_TEXT_CHARS`] chars. An empty body, `{}` or `null` comments give `None`.
pub fn parse_review_request(body: &[u8]) -> Result<Option<String>, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &REVIEW_FIELDS, "")?;
    optional_text(&obj, "comments")
}

/// Parses a `POST …/post` body: it takes no fields, so an empty body or `{}`;
/// any field is `UnknownField` (the alphabetically first).
pub fn parse_post_request(body: &[u8]) -> Result<(), RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &[], "")
}

/// Parses a `POST /v1/staging/batches` body: `{"exports": [...]}` with 1 to
/// `max_batch` items.
///
/// Checked in order: unknown top-level fields, then `exports` (present, an array,
/// non-empty, at most `max_batch` items — `InvalidField` naming the limit). The
/// items themselves are not looked at: the caller validates each with
/// [`stage_request_from_value`] and `exports[i]`, so errors in one item are
/// reported per item.
pub fn parse_batch_request(body: &[u8], max_batch: usize) -> Result<BatchRequest, RequestError> {
    let obj = parse_object(body)?;
    reject_unknown(&obj, &BATCH_FIELDS, "")?;
    let exports = match field(&obj, "exports") {
        None => return Err(missing("exports")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("exports", "must be an array of exports")),
    };
    if exports.is_empty() {
        return Err(invalid("exports", "must not be empty"));
    }
    if exports.len() > max_batch {
        return Err(invalid(
            "exports",
            format!(
                "holds {} exports; at most {max_batch} are accepted per batch",
                exports.len()
            ),
        ));
    }
    Ok(BatchRequest {
        exports: exports.clone(),
    })
}

/// An optional free-text field (top level), not blank, at most
/// [`MAX_TEXT_CHARS`] chars.
fn optional_text(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, RequestError> {
    field(obj, name)
        .map(|v| text(v, name, Some(MAX_TEXT_CHARS)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(body: Value) -> Result<StageRequest, RequestError> {
        parse_stage_request(body.to_string().as_bytes())
    }

    fn approve(body: Value) -> Result<ApproveRequest, RequestError> {
        parse_approve_request(body.to_string().as_bytes())
    }

    fn reason(body: Value, required: bool) -> Result<Option<String>, RequestError> {
        parse_reason_request(body.to_string().as_bytes(), required)
    }

    fn review(body: Value) -> Result<Option<String>, RequestError> {
        parse_review_request(body.to_string().as_bytes())
    }

    fn batch(body: Value, max: usize) -> Result<BatchRequest, RequestError> {
        parse_batch_request(body.to_string().as_bytes(), max)
    }

    fn invalid_field<T: std::fmt::Debug>(result: Result<T, RequestError>) -> String {
        match result {
            Err(RequestError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    fn unknown(path: &str) -> RequestError {
        RequestError::UnknownField(path.into())
    }

    fn valid_stage() -> Value {
        json!({
            "invoice_id": "inv_1",
            "export_format": "csv",
            "destination_system": "netsuite",
            "export_data": {"invoice_number": "INV-1", "total": "10.00"}
        })
    }

    // --- all bodies ---

    #[test]
    fn non_object_or_broken_json_is_invalid_json_for_every_parser() {
        for body in ["[]", "\"x\"", "42", "null", "{", "{\"reason\":}", "{} x"] {
            let b = body.as_bytes();
            let results = [
                parse_stage_request(b).map(|_| ()),
                parse_approve_request(b).map(|_| ()),
                parse_reason_request(b, false).map(|_| ()),
                parse_review_request(b).map(|_| ()),
                parse_batch_request(b, 10).map(|_| ()),
            ];
            for result in results {
                assert!(
                    matches!(result, Err(RequestError::InvalidJson(_))),
                    "{body:?}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn empty_body_is_invalid_json_for_stage_and_batch_only() {
        for body in ["", "  \n"] {
            let b = body.as_bytes();
            assert!(matches!(
                parse_stage_request(b),
                Err(RequestError::InvalidJson(_))
            ));
            assert!(matches!(
                parse_batch_request(b, 10),
                Err(RequestError::InvalidJson(_))
            ));
            assert_eq!(parse_approve_request(b), Ok(ApproveRequest::default()));
            assert_eq!(parse_review_request(b), Ok(None));
            assert_eq!(parse_reason_request(b, false), Ok(None));
            assert_eq!(parse_reason_request(b, true), Err(missing("reason")));
        }
    }

    // --- export format ---

    #[test]
    fn export_formats_have_names_extensions_and_content_types() {
        for (format, name, content_type) in [
            (ExportFormat::Csv, "csv", "text/csv; charset=utf-8"),
            (ExportFormat::Json, "json", "application/json"),
        ] {
            assert_eq!(format.as_str(), name);
            assert_eq!(format.ext(), name);
            assert_eq!(format.content_type(), content_type);
            assert_eq!(ExportFormat::parse(name), Some(format));
            assert_eq!(serde_json::to_value(format).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<ExportFormat>(json!(name)).unwrap(),
                format
            );
        }
        assert_eq!(ExportFormat::parse("CSV"), None);
        assert_eq!(ExportFormat::parse("xml"), None);
    }

    // --- stage ---

    #[test]
    fn minimal_stage_request_defaults_max_retries_to_three() {
        assert_eq!(
            stage(valid_stage()).unwrap(),
            StageRequest {
                invoice_id: "inv_1".into(),
                export_format: ExportFormat::Csv,
                destination_system: "netsuite".into(),
                export_data: json!({"invoice_number": "INV-1", "total": "10.00"}),
                max_retries: DEFAULT_MAX_RETRIES,
            }
        );
        assert_eq!(DEFAULT_MAX_RETRIES, 3);
    }

    #[test]
    fn full_stage_request_is_parsed() {
        let mut body = valid_stage();
        body["export_format"] = json!("json");
        body["max_retries"] = json!(7);
        let req = stage(body).unwrap();
        assert_eq!(req.export_format, ExportFormat::Json);
        assert_eq!(req.max_retries, 7);
    }

    #[test]
    fn missing_stage_fields_are_named() {
        for key in [
            "invoice_id",
            "export_format",
            "destination_system",
            "export_data",
        ] {
            let mut body = valid_stage();
            body.as_object_mut().unwrap().remove(key);
            assert_eq!(stage(body).unwrap_err(), missing(key));
            let mut body = valid_stage();
            body[key] = Value::Null;
            assert_eq!(stage(body).unwrap_err(), missing(key), "{key}: null");
        }
    }

    #[test]
    fn stage_strings_must_be_non_blank_and_at_most_200_chars() {
        for key in ["invoice_id", "destination_system"] {
            for v in [json!(""), json!("  "), json!("x".repeat(201)), json!(12)] {
                let mut body = valid_stage();
                body[key] = v;
                assert_eq!(invalid_field(stage(body)), key);
            }
            let mut body = valid_stage();
            body[key] = json!("é".repeat(200));
            assert!(stage(body).is_ok());
        }
        // Kept as sent, surrounding whitespace included.
        let mut body = valid_stage();
        body["invoice_id"] = json!(" inv 1 ");
        assert_eq!(stage(body).unwrap().invoice_id, " inv 1 ");
    }

    #[test]
    fn export_format_must_be_csv_or_json() {
        for v in [
            json!("CSV"),
            json!("xml"),
            json!(""),
            json!(1),
            json!(["csv"]),
        ] {
            let mut body = valid_stage();
            body["export_format"] = v;
            assert_eq!(invalid_field(stage(body)), "export_format");
        }
    }

    #[test]
    fn export_data_must_be_an_object_but_its_contents_are_not_checked() {
        for v in [json!([]), json!("{}"), json!(1), json!(true)] {
            let mut body = valid_stage();
            body["export_data"] = v;
            assert_eq!(invalid_field(stage(body)), "export_data");
        }
        let mut body = valid_stage();
        body["export_data"] = json!({"anything": [1, {"goes": null}]});
        assert_eq!(
            stage(body).unwrap().export_data,
            json!({"anything": [1, {"goes": null}]})
        );
        let mut body = valid_stage();
        body["export_data"] = json!({});
        assert!(stage(body).is_ok());
    }

    #[test]
    fn max_retries_must_be_an_integer_from_0_to_10() {
        for v in [
            json!(-1),
            json!(11),
            json!(3.0),
            json!("3"),
            json!(u64::MAX),
        ] {
            let mut body = valid_stage();
            body["max_retries"] = v.clone();
            assert_eq!(invalid_field(stage(body)), "max_retries", "{v}");
        }
        for n in [0, 10] {
            let mut body = valid_stage();
            body["max_retries"] = json!(n);
            assert_eq!(stage(body).unwrap().max_retries, n);
        }
        let mut body = valid_stage();
        body["max_retries"] = Value::Null;
        assert_eq!(stage(body).unwrap().max_retries, DEFAULT_MAX_RETRIES);
    }

    #[test]
    fn prepared_by_is_rejected_because_it_comes_from_the_token() {
        for v in [json!("mallory"), Value::Null] {
            let mut body = valid_stage();
            body["prepared_by"] = v;
            assert_eq!(stage(body).unwrap_err(), unknown("prepared_by"));
        }
    }

    #[test]
    fn unknown_stage_field_is_reported_alphabetically_first() {
        let mut body = valid_stage();
        body["zeta"] = json!(1);
        body["format"] = json!("csv");
        assert_eq!(stage(body).unwrap_err(), unknown("format"));
    }

    #[test]
    fn stage_fields_are_checked_in_documented_order() {
        // Unknown fields win over everything; then invoice_id before export_format.
        let body = json!({"extra": 1, "invoice_id": "", "export_format": "x"});
        assert_eq!(stage(body).unwrap_err(), unknown("extra"));
        let body = json!({"invoice_id": "", "export_format": "x"});
        assert_eq!(invalid_field(stage(body)), "invoice_id");
        let body = json!({"invoice_id": "i", "export_format": "x"});
        assert_eq!(invalid_field(stage(body)), "export_format");
    }

    // --- batch items ---

    #[test]
    fn batch_item_errors_carry_the_item_prefix() {
        let mut item = valid_stage();
        item["invoice_id"] = json!("");
        assert_eq!(
            invalid_field(stage_request_from_value(&item, "exports[3]")),
            "exports[3].invoice_id"
        );
        let mut item = valid_stage();
        item.as_object_mut().unwrap().remove("export_data");
        assert_eq!(
            stage_request_from_value(&item, "exports[0]").unwrap_err(),
            missing("exports[0].export_data")
        );
        let mut item = valid_stage();
        item["prepared_by"] = json!("x");
        assert_eq!(
            stage_request_from_value(&item, "exports[12]").unwrap_err(),
            unknown("exports[12].prepared_by")
        );
        let mut item = valid_stage();
        item["max_retries"] = json!(11);
        let err = stage_request_from_value(&item, "exports[1]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field `exports[1].max_retries`: must be an integer from 0 to 10"
        );
    }

    #[test]
    fn batch_item_prefix_may_end_with_a_dot_or_be_empty() {
        let mut item = valid_stage();
        item["export_format"] = json!("pdf");
        assert_eq!(
            invalid_field(stage_request_from_value(&item, "exports[2].")),
            "exports[2].export_format"
        );
        assert_eq!(
            invalid_field(stage_request_from_value(&item, "")),
            "export_format"
        );
    }

    #[test]
    fn a_valid_batch_item_parses_like_a_stage_body() {
        assert_eq!(
            stage_request_from_value(&valid_stage(), "exports[0]").unwrap(),
            stage(valid_stage()).unwrap()
        );
    }

    #[test]
    fn a_non_object_batch_item_is_invalid_at_its_own_path() {
        for item in [json!([]), json!("x"), json!(null), json!(5)] {
            assert_eq!(
                invalid_field(stage_request_from_value(&item, "exports[4]")),
                "exports[4]"
            );
            assert!(matches!(
                stage_request_from_value(&item, ""),
                Err(RequestError::InvalidJson(_))
            ));
        }
    }

    // --- approve ---

    #[test]
    fn empty_approve_body_means_approve_as_prepared() {
        assert_eq!(approve(json!({})).unwrap(), ApproveRequest::default());
        assert_eq!(
            approve(json!({"approved_data": null, "change_reason": null})).unwrap(),
            ApproveRequest::default()
        );
    }

    #[test]
    fn full_approve_request_is_parsed() {
        let req = approve(json!({
            "approved_data": {"total": "11.00"},
            "change_reason": "vendor corrected the total",
            "approval_comments": "ok"
        }))
        .unwrap();
        assert_eq!(
            req,
            ApproveRequest {
                approved_data: Some(json!({"total": "11.00"})),
                change_reason: Some("vendor corrected the total".into()),
                approval_comments: Some("ok".into()),
            }
        );
    }

    #[test]
    fn approved_data_must_be_an_object() {
        for v in [json!([]), json!("{}"), json!(0)] {
            assert_eq!(
                invalid_field(approve(json!({ "approved_data": v }))),
                "approved_data"
            );
        }
    }

    #[test]
    fn approve_texts_must_be_non_blank_strings_of_at_most_2000_chars() {
        for key in ["change_reason", "approval_comments"] {
            for v in [json!(""), json!(" \t"), json!("x".repeat(2001)), json!(1)] {
                assert_eq!(invalid_field(approve(json!({ key: v }))), key);
            }
            assert!(approve(json!({ key: "é".repeat(2000) })).is_ok());
        }
    }

    #[test]
    fn unknown_approve_field_is_rejected() {
        assert_eq!(
            approve(json!({"approved_by": "x", "reason": "y"})).unwrap_err(),
            unknown("approved_by")
        );
    }

    // --- reason ---

    #[test]
    fn reason_is_parsed_when_present() {
        for required in [true, false] {
            assert_eq!(
                reason(json!({"reason": "duplicate invoice"}), required),
                Ok(Some("duplicate invoice".into()))
            );
        }
    }

    #[test]
    fn required_reason_is_missing_when_absent_or_null() {
        for body in [json!({}), json!({"reason": null})] {
            assert_eq!(reason(body.clone(), true), Err(missing("reason")));
            assert_eq!(reason(body, false), Ok(None));
        }
    }

    #[test]
    fn reason_must_be_a_non_blank_string_of_at_most_2000_chars() {
        for v in [
            json!(""),
            json!("   "),
            json!("x".repeat(2001)),
            json!(["x"]),
        ] {
            for required in [true, false] {
                assert_eq!(
                    invalid_field(reason(json!({ "reason": v }), required)),
                    "reason"
                );
            }
        }
        assert!(reason(json!({"reason": "x".repeat(2000)}), true).is_ok());
    }

    #[test]
    fn reason_body_rejects_other_fields_including_comments() {
        assert_eq!(
            reason(json!({"reason": "r", "comments": "c"}), true),
            Err(unknown("comments"))
        );
    }

    // --- review ---

    #[test]
    fn review_comments_are_optional() {
        assert_eq!(review(json!({})), Ok(None));
        assert_eq!(review(json!({"comments": null})), Ok(None));
        assert_eq!(
            review(json!({"comments": "looks right"})),
            Ok(Some("looks right".into()))
        );
    }

    #[test]
    fn review_comments_must_be_non_blank_strings_of_at_most_2000_chars() {
        for v in [json!(""), json!("\n"), json!("x".repeat(2001)), json!(true)] {
            assert_eq!(invalid_field(review(json!({ "comments": v }))), "comments");
        }
        assert!(review(json!({"comments": "x".repeat(2000)})).is_ok());
    }

    #[test]
    fn review_body_rejects_other_fields() {
        assert_eq!(review(json!({"reason": "r"})), Err(unknown("reason")));
    }

    // --- post ---

    #[test]
    fn post_bodies_are_empty_or_an_empty_object() {
        for ok in ["", " \n", "{}", " { } "] {
            assert_eq!(parse_post_request(ok.as_bytes()), Ok(()), "{ok:?}");
        }
        for bad in ["[]", "null", "1"] {
            assert_eq!(
                parse_post_request(bad.as_bytes()),
                Err(RequestError::InvalidJson(
                    "expected a JSON object at the top level".into()
                )),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_post_request(b"{"),
            Err(RequestError::InvalidJson(_))
        ));
    }

    #[test]
    fn post_body_fields_are_unknown_alphabetically_first() {
        assert_eq!(parse_post_request(b"{\"a\":1}"), Err(unknown("a")));
        assert_eq!(
            parse_post_request(b"{\"reason\":\"r\",\"force\":null}"),
            Err(unknown("force"))
        );
    }

    // --- batch ---

    #[test]
    fn batch_items_are_returned_raw_and_unvalidated() {
        let req = batch(json!({"exports": [valid_stage(), {"junk": 1}, 3]}), 10).unwrap();
        assert_eq!(req.exports, [valid_stage(), json!({"junk": 1}), json!(3)]);
    }

    #[test]
    fn batch_exports_must_be_a_non_empty_array() {
        assert_eq!(batch(json!({}), 10).unwrap_err(), missing("exports"));
        assert_eq!(
            batch(json!({"exports": null}), 10).unwrap_err(),
            missing("exports")
        );
        for v in [json!([]), json!({}), json!("x")] {
            assert_eq!(invalid_field(batch(json!({ "exports": v }), 10)), "exports");
        }
    }

    #[test]
    fn batch_size_is_limited_and_the_error_names_the_limit() {
        let items = |n: usize| vec![json!({}); n];
        assert_eq!(
            batch(json!({"exports": items(3)}), 3)
                .unwrap()
                .exports
                .len(),
            3
        );
        let err = batch(json!({"exports": items(4)}), 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field `exports`: holds 4 exports; at most 3 are accepted per batch"
        );
    }

    #[test]
    fn unknown_batch_fields_are_rejected() {
        assert_eq!(
            batch(json!({"exports": [{}], "batch_id": "b"}), 10).unwrap_err(),
            unknown("batch_id")
        );
    }
}

/// The request bodies of issue 9 and arbitrary ones, taken the way the routes take
/// them: parse, then validate the export data, then (for a stage body) render it.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::staging::data::strategies::{
        deep_text, export_data, invoice, json, key, scalar, text,
    };
    use crate::staging::data::validate_export_data;
    use crate::staging::diff::diff;
    use crate::staging::render::{render_csv, render_json};
    use proptest::prelude::*;
    use serde_json::json;

    /// What `POST /v1/staging/exports` does with a body short of storage: parse,
    /// validate the data, render both formats, and diff it against itself.
    fn stage_pipeline(body: &[u8]) {
        if let Ok(req) = parse_stage_request(body) {
            check_stage_request(&req);
            if let Ok(v) = validate_export_data(&req.export_data) {
                assert!(v.quality_score <= 100);
            }
            let _ = render_csv(&req.export_data);
            let _ = render_json(&req.export_data, "exp_1");
            assert!(diff(&req.export_data, &req.export_data).is_empty());
        }
    }

    /// What `POST /v1/staging/batches` does with a body short of storage.
    fn batch_pipeline(body: &[u8], max_batch: usize) {
        if let Ok(req) = parse_batch_request(body, max_batch) {
            assert!(!req.exports.is_empty() && req.exports.len() <= max_batch);
            for (i, item) in req.exports.iter().enumerate() {
                if let Ok(r) = stage_request_from_value(item, &format!("exports[{i}]")) {
                    check_stage_request(&r);
                    let _ = validate_export_data(&r.export_data);
                }
            }
        }
    }

    /// The documented guarantees of an accepted stage body.
    fn check_stage_request(req: &StageRequest) {
        assert!(!req.invoice_id.trim().is_empty());
        assert!(req.invoice_id.chars().count() <= MAX_INVOICE_ID_CHARS);
        assert!(!req.destination_system.trim().is_empty());
        assert!(req.destination_system.chars().count() <= MAX_DESTINATION_CHARS);
        assert!(req.export_data.is_object());
        assert!(MAX_RETRIES_RANGE.contains(&req.max_retries));
    }

    /// Every parser on one body; none may panic.
    fn every_parser(body: &[u8]) {
        stage_pipeline(body);
        batch_pipeline(body, 3);
        if let Ok(req) = parse_approve_request(body) {
            if let Some(data) = &req.approved_data {
                let _ = validate_export_data(data);
            }
        }
        for required in [false, true] {
            if let Ok(reason) = parse_reason_request(body, required) {
                assert!(reason.is_some() || !required);
            }
        }
        let _ = parse_review_request(body);
    }

    /// A stage body: the known fields, mostly well formed, with odd export data.
    fn stage_body() -> BoxedStrategy<Value> {
        let text_or_any = || prop_oneof![3 => text().prop_map(Value::from), 1 => scalar()];
        (
            prop::option::weighted(0.95, text_or_any()),
            prop::option::weighted(
                0.95,
                prop_oneof![
                    3 => prop::sample::select(&["csv", "json"][..]).prop_map(Value::from),
                    1 => scalar(),
                ],
            ),
            prop::option::weighted(0.95, text_or_any()),
            prop::option::weighted(0.95, prop_oneof![4 => export_data(), 1 => json()]),
            prop::option::of(prop_oneof![(0u32..12).prop_map(Value::from), scalar()]),
            prop::option::weighted(0.05, (key(), scalar())),
        )
            .prop_map(|(id, format, dest, data, retries, extra)| {
                let mut obj = Map::new();
                for (name, v) in [
                    ("invoice_id", id),
                    ("export_format", format),
                    ("destination_system", dest),
                    ("export_data", data),
                    ("max_retries", retries),
                ] {
                    if let Some(v) = v {
                        obj.insert(name.to_owned(), v);
                    }
                }
                if let Some((k, v)) = extra {
                    obj.insert(k, v);
                }
                Value::Object(obj)
            })
            .boxed()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn no_parser_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            every_parser(&body);
        }

        #[test]
        fn no_parser_panics_on_arbitrary_json(v in json()) {
            every_parser(v.to_string().as_bytes());
        }

        /// A post body is accepted exactly when it is `{}` (as JSON).
        #[test]
        fn post_bodies_never_panic_and_only_empty_objects_pass(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            v in json(),
        ) {
            let _ = parse_post_request(&bytes);
            let empty = matches!(&v, Value::Object(m) if m.is_empty());
            prop_assert_eq!(parse_post_request(v.to_string().as_bytes()).is_ok(), empty);
        }

        #[test]
        fn stage_bodies_with_odd_data_go_through_the_whole_pipeline(body in stage_body()) {
            stage_pipeline(body.to_string().as_bytes());
        }

        #[test]
        fn batch_bodies_with_odd_items_go_through_the_whole_pipeline(
            items in prop::collection::vec(prop_oneof![4 => stage_body(), 1 => json()], 0..6),
            max_batch in 0usize..8,
            prefix in text(),
        ) {
            batch_pipeline(json!({ "exports": items }).to_string().as_bytes(), max_batch);
            for item in &items {
                // Any prefix, odd ones included.
                if let Ok(r) = stage_request_from_value(item, &prefix) {
                    check_stage_request(&r);
                }
            }
        }

        #[test]
        fn approve_review_and_reason_bodies_never_panic(
            data in prop::option::of(prop_oneof![invoice(), json()]),
            reason in prop::option::of(prop_oneof![text().prop_map(Value::from), scalar()]),
            comments in prop::option::of(prop_oneof![text().prop_map(Value::from), scalar()]),
        ) {
            let mut approve = Map::new();
            if let Some(d) = data {
                approve.insert("approved_data".into(), d);
            }
            if let Some(r) = &reason {
                approve.insert("change_reason".into(), r.clone());
            }
            if let Some(c) = &comments {
                approve.insert("approval_comments".into(), c.clone());
            }
            every_parser(Value::Object(approve).to_string().as_bytes());
            every_parser(json!({ "reason": reason }).to_string().as_bytes());
            every_parser(json!({ "comments": comments }).to_string().as_bytes());
        }
    }

    proptest! {
        // Each case parses a few hundred levels three times over: fewer cases.
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn no_parser_panics_on_deeply_nested_json(text in deep_text()) {
            every_parser(text.as_bytes());
            every_parser(format!("{{\"export_data\":{text}}}").as_bytes());
            every_parser(format!("{{\"exports\":[{text}]}}").as_bytes());
        }
    }

    /// The largest value a Decimal holds, and the invoice line of issue 9.
    const EDGE: &str = "79228162514264337593543950335";

    fn overflow_item() -> Value {
        json!({
            "invoice_id": "inv-overflow", "export_format": "csv", "destination_system": "netsuite",
            "export_data": {
                "vendor_name": "Acme", "invoice_number": "INV-9", "invoice_date": "2026-10-31",
                "currency": "EUR", "total_amount": format!("-{EDGE}"),
                "line_items": [{"description": "x", "quantity": "1", "unit_price": EDGE,
                                "amount": format!("-{EDGE}")}]
            }
        })
    }

    #[test]
    fn the_overflow_invoice_of_issue_9_stages_with_a_finding_on_both_routes() {
        let body = overflow_item().to_string();
        let req = parse_stage_request(body.as_bytes()).unwrap();
        let v = validate_export_data(&req.export_data).unwrap();
        assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
        assert_eq!(
            (v.errors[0].field.as_str(), v.errors[0].code),
            ("line_items[0].amount", "line_amount_mismatch")
        );
        assert!(v.quality_score < 70);

        let body = json!({"exports": [overflow_item(), overflow_item()]}).to_string();
        let req = parse_batch_request(body.as_bytes(), 10).unwrap();
        for (i, item) in req.exports.iter().enumerate() {
            let r = stage_request_from_value(item, &format!("exports[{i}]")).unwrap();
            assert_eq!(validate_export_data(&r.export_data), Ok(v.clone()));
        }
    }

    #[test]
    fn totals_whose_sum_overflows_stage_with_a_total_mismatch() {
        let line =
            |d: &str| json!({"description": d, "quantity": 1, "unit_price": EDGE, "amount": EDGE});
        for (total, lines) in [
            (format!("-{EDGE}"), vec![line("a")]),
            (EDGE.to_owned(), vec![line("a"), line("b")]),
        ] {
            let mut item = overflow_item();
            item["export_data"]["total_amount"] = json!(total);
            item["export_data"]["line_items"] = json!(lines);
            let req = parse_stage_request(item.to_string().as_bytes()).unwrap();
            let v = validate_export_data(&req.export_data).unwrap();
            let codes: Vec<_> = v
                .errors
                .iter()
                .map(|f| (f.field.as_str(), f.code))
                .collect();
            assert_eq!(codes, [("total_amount", "total_mismatch")], "{total}");
        }
    }
}
