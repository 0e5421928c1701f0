//! Parsing and validation of the staging request bodies:
//!
//! - `POST /v1/staging/exports` → [`parse_stage_request`]:
//!   `{"invoice_id": "inv_1", "export_format": "csv", "destination_system": "netsuite",
//!   "export_data": {…}, "max_retries": 3, "prepared_by": "…"}`
//! - `POST /v1/staging/batches` → [`parse_batch_request`]: `{"exports": [{…}, …]}`,
//!   each item then checked with [`stage_request_from_value`]
//! - `PUT …/review` → [`parse_review_request`]: `{"comments": "…", "reviewed_by": "…"}`,
//!   optional
//! - `PUT …/approve` → [`parse_approve_request`]:
//!   `{"approved_data": {…}, "change_reason": "…", "approval_comments": "…",
//!   "approved_by": "…"}`, all optional
//! - `PUT …/reject` → [`parse_reject_request`]: `{"reason": "…", "rejected_by": "…"}`
//! - `POST …/rollback` → [`parse_rollback_request`]: `{"reason": "…", "rolled_back_by": "…"}`
//! - `PUT …/request-changes` → [`parse_request_changes_request`]: `{"reason": "…",
//!   "requested_by": "…"}`
//! - `POST …/post` → [`parse_post_request`]: `{"external_reference": "…",
//!   "export_filename": "…", "posted_by": "…"}`, all optional, or empty
//!
//! **Identity fields** (`prepared_by`, `reviewed_by`, `approved_by`, `rejected_by`, `requested_by`,
//! `posted_by`, `rolled_back_by`) are accepted because AP Intake's API sends them,
//! but who acts is always the token's subject: every parser takes the `caller`
//! (that subject), and a body naming anyone else is
//! [`RequestError::NotTheCaller`] — never silently overridden, never trusted.
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
/// Longest accepted `external_reference`, in chars (AP Intake's column is 255).
pub const MAX_REFERENCE_CHARS: usize = 255;
/// Longest accepted `export_filename`, in UTF-8 bytes (what file systems allow).
pub const MAX_EXPORT_FILENAME_BYTES: usize = 255;
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

/// A validated `POST …/post` body; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PostRequest {
    /// The reference the caller already holds for this export in the destination
    /// system: non-blank, at most [`MAX_REFERENCE_CHARS`] chars, no control chars.
    pub external_reference: Option<String>,
    /// The file name to record instead of the generated one; a plain file name
    /// ([`check_export_filename`]).
    pub export_filename: Option<String>,
}

/// A `POST /v1/staging/batches` body whose shape is checked but whose items are
/// not: each is raw JSON for [`stage_request_from_value`] with the prefix
/// `exports[i]`, so one bad item does not reject the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// Non-empty, at most the `max_batch` given to [`parse_batch_request`].
    pub exports: Vec<Value>,
}

/// Every stage field; `prepared_by` only as the caller (see [`parse_stage_request`]).
pub const STAGE_FIELDS: [&str; 6] = [
    "invoice_id",
    "export_format",
    "destination_system",
    "export_data",
    "max_retries",
    "prepared_by",
];
pub const APPROVE_FIELDS: [&str; 4] = [
    "approved_data",
    "change_reason",
    "approval_comments",
    "approved_by",
];
pub const REVIEW_FIELDS: [&str; 2] = ["comments", "reviewed_by"];
pub const POST_FIELDS: [&str; 3] = ["external_reference", "export_filename", "posted_by"];
pub const BATCH_FIELDS: [&str; 1] = ["exports"];

/// Checks an identity field of a body: absent (or `null`) or the caller's own
/// subject passes; another string is [`RequestError::NotTheCaller`]; any other
/// value is `InvalidField`. The name is never taken from the body: the handlers
/// record the token's subject.
fn check_identity(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
    caller: &str,
) -> Result<(), RequestError> {
    match field(obj, name) {
        None => Ok(()),
        Some(Value::String(s)) if s == caller => Ok(()),
        Some(Value::String(_)) => Err(RequestError::NotTheCaller(path.to_owned())),
        Some(_) => Err(invalid(path, "must be a string")),
    }
}

/// Parses and validates a `POST /v1/staging/exports` body.
///
/// Checked in order: unknown fields, `prepared_by`, `invoice_id`, `export_format`,
/// `destination_system`, `export_data`, `max_retries`.
///
/// The preparer is the authenticated caller (`caller`, the token's subject), so a
/// client cannot stage an export in someone else's name: `prepared_by` may be
/// sent (AP Intake's body has it) but must equal `caller`, else
/// [`RequestError::NotTheCaller`].
pub fn parse_stage_request(body: &[u8], caller: &str) -> Result<StageRequest, RequestError> {
    let obj = parse_object(body)?;
    stage_from_map(&obj, "", caller)
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
    caller: &str,
) -> Result<StageRequest, RequestError> {
    match v {
        Value::Object(obj) => stage_from_map(obj, path_prefix, caller),
        _ if path_prefix.is_empty() => Err(not_an_object()),
        _ => Err(invalid(
            path_prefix.trim_end_matches('.'),
            "must be a JSON object",
        )),
    }
}

fn stage_from_map(
    obj: &Map<String, Value>,
    prefix: &str,
    caller: &str,
) -> Result<StageRequest, RequestError> {
    let path = |name: &str| join(prefix, name);
    reject_unknown(obj, &STAGE_FIELDS, prefix)?;
    check_identity(obj, "prepared_by", &path("prepared_by"), caller)?;

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
/// Checked in order: unknown fields, `approved_by` (must be `caller`),
/// `approved_data`, `change_reason`, `approval_comments`.
pub fn parse_approve_request(body: &[u8], caller: &str) -> Result<ApproveRequest, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &APPROVE_FIELDS, "")?;
    check_identity(&obj, "approved_by", "approved_by", caller)?;
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

/// Parses a `PUT …/reject` body: `{"reason": "…"}`, `reason` required;
/// `rejected_by` may name the caller.
pub fn parse_reject_request(body: &[u8], caller: &str) -> Result<String, RequestError> {
    parse_reason_request(body, "rejected_by", caller)
}

/// Parses a `POST …/rollback` body: `{"reason": "…"}`, `reason` required;
/// `rolled_back_by` may name the caller.
pub fn parse_rollback_request(body: &[u8], caller: &str) -> Result<String, RequestError> {
    parse_reason_request(body, "rolled_back_by", caller)
}

/// Parses a `PUT …/request-changes` body: `{"reason": "…"}`, `reason`
/// required (what the preparer should change); `requested_by` may name the
/// caller.
pub fn parse_request_changes_request(body: &[u8], caller: &str) -> Result<String, RequestError> {
    parse_reason_request(body, "requested_by", caller)
}

/// A `{"reason": "…"}` body whose identity field is `identity`. `reason` is
/// non-blank and at most [`MAX_TEXT_CHARS`] chars; absent or `null` — an empty
/// body included — it is `MissingField("reason")`.
fn parse_reason_request(body: &[u8], identity: &str, caller: &str) -> Result<String, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &["reason", identity], "")?;
    check_identity(&obj, identity, identity, caller)?;
    optional_text(&obj, "reason")?.ok_or_else(|| missing("reason"))
}

/// Parses a `PUT …/review` body: optional `{"comments": "…"}`, non-blank and at most
/// [`MAX_TEXT_CHARS`] chars; `reviewed_by` may name the caller. An empty body, `{}`
/// or `null` comments give `None`.
pub fn parse_review_request(body: &[u8], caller: &str) -> Result<Option<String>, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &REVIEW_FIELDS, "")?;
    check_identity(&obj, "reviewed_by", "reviewed_by", caller)?;
    optional_text(&obj, "comments")
}

/// Parses a `POST …/post` body (AP Intake's): optional `external_reference` and
/// `export_filename`, and `posted_by`, which must name the caller. An empty body
/// or `{}` posts with the generated file name and the destination's reference.
///
/// Checked in order: unknown fields (the alphabetically first), `posted_by`,
/// `external_reference`, `export_filename`.
pub fn parse_post_request(body: &[u8], caller: &str) -> Result<PostRequest, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &POST_FIELDS, "")?;
    check_identity(&obj, "posted_by", "posted_by", caller)?;
    let external_reference = field(&obj, "external_reference")
        .map(|v| {
            let r = text(v, "external_reference", Some(MAX_REFERENCE_CHARS))?;
            if r.chars().any(char::is_control) {
                return Err(invalid(
                    "external_reference",
                    "must not contain control characters",
                ));
            }
            Ok(r)
        })
        .transpose()?;
    let export_filename = match field(&obj, "export_filename") {
        None => None,
        Some(Value::String(name)) => {
            check_export_filename(name).map_err(|reason| invalid("export_filename", reason))?;
            Some(name.clone())
        }
        Some(_) => return Err(invalid("export_filename", "must be a string")),
    };
    Ok(PostRequest {
        external_reference,
        export_filename,
    })
}

/// Whether `name` is a plain file name, safe to record, to serve as an attachment
/// and to send to a destination: one path component that no file system or
/// spreadsheet would read as anything else. Refused, with the reason:
/// - empty, or more than [`MAX_EXPORT_FILENAME_BYTES`] bytes of UTF-8;
/// - a path: `/` or `\`, or `..` anywhere (`.` alone too);
/// - control characters (C0, DEL, C1) and the invisible format characters that
///   reorder or hide text (bidirectional overrides such as U+202E, zero-width
///   characters, the BOM) — the classic way to make `evil.exe` read `exe.csv`;
/// - the characters Windows forbids in a name (`< > : " | ? *`);
/// - leading or trailing whitespace, or a trailing dot (Windows drops them).
pub fn check_export_filename(name: &str) -> Result<(), &'static str> {
    const INVISIBLE: [char; 13] = [
        '\u{061C}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{202A}',
        '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2060}', '\u{FEFF}',
    ];
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > MAX_EXPORT_FILENAME_BYTES {
        return Err("must be at most 255 bytes of UTF-8");
    }
    if name.contains(['/', '\\']) || name.contains("..") || name == "." {
        return Err("must be a plain file name, not a path (no `/`, `\\` or `..`)");
    }
    if name
        .chars()
        .any(|c| c.is_control() || INVISIBLE.contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c))
    {
        return Err("must not contain control or invisible formatting characters");
    }
    if name.contains(['<', '>', ':', '"', '|', '?', '*']) {
        return Err("must not contain any of < > : \" | ? *");
    }
    if name.trim() != name || name.ends_with('.') {
        return Err("must not start or end with whitespace, nor end with a dot");
    }
    Ok(())
}

/// Parses a `POST /v1/staging/batches` body: `{"exports": [...]}` with 1 to
/// `max_batch` items.
///
/// Checked in order: unknown top-level fields, then `exports` (present, an array,
/// non-empty, at most `max_batch` items — `InvalidField` naming the limit), then
/// each object item's `prepared_by`, which must name `caller`: staging in someone
/// else's name rejects the whole batch, like a forged single stage. Otherwise the
/// items are not looked at: the caller validates each with
/// [`stage_request_from_value`] and `exports[i]`, so errors in one item are
/// reported per item.
pub fn parse_batch_request(
    body: &[u8],
    max_batch: usize,
    caller: &str,
) -> Result<BatchRequest, RequestError> {
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
    for (i, item) in exports.iter().enumerate() {
        if let Value::Object(item) = item {
            let path = format!("exports[{i}].prepared_by");
            check_identity(item, "prepared_by", &path, caller)?;
        }
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

    /// The token's subject in these tests.
    const ME: &str = "alice";

    fn stage(body: Value) -> Result<StageRequest, RequestError> {
        parse_stage_request(body.to_string().as_bytes(), ME)
    }

    fn approve(body: Value) -> Result<ApproveRequest, RequestError> {
        parse_approve_request(body.to_string().as_bytes(), ME)
    }

    fn reject(body: Value) -> Result<String, RequestError> {
        parse_reject_request(body.to_string().as_bytes(), ME)
    }

    fn rollback(body: Value) -> Result<String, RequestError> {
        parse_rollback_request(body.to_string().as_bytes(), ME)
    }

    fn review(body: Value) -> Result<Option<String>, RequestError> {
        parse_review_request(body.to_string().as_bytes(), ME)
    }

    fn post(body: Value) -> Result<PostRequest, RequestError> {
        parse_post_request(body.to_string().as_bytes(), ME)
    }

    fn batch(body: Value, max: usize) -> Result<BatchRequest, RequestError> {
        parse_batch_request(body.to_string().as_bytes(), max, ME)
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
                parse_stage_request(b, ME).map(|_| ()),
                parse_approve_request(b, ME).map(|_| ()),
                parse_reject_request(b, ME).map(|_| ()),
                parse_rollback_request(b, ME).map(|_| ()),
                parse_review_request(b, ME).map(|_| ()),
                parse_post_request(b, ME).map(|_| ()),
                parse_batch_request(b, 10, ME).map(|_| ()),
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
                parse_stage_request(b, ME),
                Err(RequestError::InvalidJson(_))
            ));
            assert!(matches!(
                parse_batch_request(b, 10, ME),
                Err(RequestError::InvalidJson(_))
            ));
            assert_eq!(parse_approve_request(b, ME), Ok(ApproveRequest::default()));
            assert_eq!(parse_review_request(b, ME), Ok(None));
            assert_eq!(parse_post_request(b, ME), Ok(PostRequest::default()));
            assert_eq!(parse_reject_request(b, ME), Err(missing("reason")));
            assert_eq!(parse_rollback_request(b, ME), Err(missing("reason")));
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

    fn not_the_caller(path: &str) -> RequestError {
        RequestError::NotTheCaller(path.into())
    }

    #[test]
    fn prepared_by_may_name_the_caller_but_nobody_else() {
        for v in [json!(ME), Value::Null] {
            let mut body = valid_stage();
            body["prepared_by"] = v;
            assert_eq!(stage(body), stage(valid_stage()));
        }
        for v in ["mallory", "Alice", " alice", ""] {
            let mut body = valid_stage();
            body["prepared_by"] = json!(v);
            assert_eq!(
                stage(body).unwrap_err(),
                not_the_caller("prepared_by"),
                "{v:?}"
            );
        }
        let mut body = valid_stage();
        body["prepared_by"] = json!(["alice"]);
        assert_eq!(invalid_field(stage(body)), "prepared_by");
    }

    #[test]
    fn every_identity_field_must_name_the_caller_and_the_error_says_why() {
        type Parse = fn(Value) -> Result<(), RequestError>;
        let bodies: [(&str, Parse); 6] = [
            ("prepared_by", |b| {
                let mut full = valid_stage();
                full.as_object_mut()
                    .unwrap()
                    .extend(b.as_object().unwrap().clone());
                stage(full).map(|_| ())
            }),
            ("reviewed_by", |b| review(b).map(|_| ())),
            ("approved_by", |b| approve(b).map(|_| ())),
            ("rejected_by", |mut b| {
                b["reason"] = json!("r");
                reject(b).map(|_| ())
            }),
            ("posted_by", |b| post(b).map(|_| ())),
            ("rolled_back_by", |mut b| {
                b["reason"] = json!("r");
                rollback(b).map(|_| ())
            }),
        ];
        for (name, parse) in bodies {
            assert_eq!(parse(json!({ name: ME })), Ok(()), "{name}");
            let err = parse(json!({ name: "manager-uuid" })).unwrap_err();
            assert_eq!(err, not_the_caller(name));
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{name}`")) && message.contains("comes from the token"),
                "{message}"
            );
            assert!(!message.contains("manager-uuid"), "{message}");
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
            invalid_field(stage_request_from_value(&item, "exports[3]", ME)),
            "exports[3].invoice_id"
        );
        let mut item = valid_stage();
        item.as_object_mut().unwrap().remove("export_data");
        assert_eq!(
            stage_request_from_value(&item, "exports[0]", ME).unwrap_err(),
            missing("exports[0].export_data")
        );
        let mut item = valid_stage();
        item["prepared_by"] = json!("x");
        assert_eq!(
            stage_request_from_value(&item, "exports[12]", ME).unwrap_err(),
            not_the_caller("exports[12].prepared_by")
        );
        let mut item = valid_stage();
        item["max_retries"] = json!(11);
        let err = stage_request_from_value(&item, "exports[1]", ME).unwrap_err();
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
            invalid_field(stage_request_from_value(&item, "exports[2].", ME)),
            "exports[2].export_format"
        );
        assert_eq!(
            invalid_field(stage_request_from_value(&item, "", ME)),
            "export_format"
        );
    }

    #[test]
    fn a_valid_batch_item_parses_like_a_stage_body() {
        assert_eq!(
            stage_request_from_value(&valid_stage(), "exports[0]", ME).unwrap(),
            stage(valid_stage()).unwrap()
        );
    }

    #[test]
    fn a_non_object_batch_item_is_invalid_at_its_own_path() {
        for item in [json!([]), json!("x"), json!(null), json!(5)] {
            assert_eq!(
                invalid_field(stage_request_from_value(&item, "exports[4]", ME)),
                "exports[4]"
            );
            assert!(matches!(
                stage_request_from_value(&item, "", ME),
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
            approve(json!({"approved_by": ME, "reason": "y"})).unwrap_err(),
            unknown("reason")
        );
    }

    // --- reason ---

    type ReasonParser = fn(Value) -> Result<String, RequestError>;
    const REASON_PARSERS: [ReasonParser; 2] = [reject, rollback];

    #[test]
    fn reason_is_parsed_when_present() {
        for parse in REASON_PARSERS {
            assert_eq!(
                parse(json!({"reason": "duplicate invoice"})),
                Ok("duplicate invoice".into())
            );
        }
    }

    #[test]
    fn reason_is_required_and_missing_when_absent_or_null() {
        for parse in REASON_PARSERS {
            for body in [json!({}), json!({"reason": null})] {
                assert_eq!(parse(body), Err(missing("reason")));
            }
        }
    }

    #[test]
    fn reason_must_be_a_non_blank_string_of_at_most_2000_chars() {
        for parse in REASON_PARSERS {
            for v in [
                json!(""),
                json!("   "),
                json!("x".repeat(2001)),
                json!(["x"]),
            ] {
                assert_eq!(invalid_field(parse(json!({ "reason": v }))), "reason");
            }
            assert!(parse(json!({"reason": "x".repeat(2000)})).is_ok());
        }
    }

    #[test]
    fn reason_body_rejects_other_fields_including_comments_and_the_other_identity() {
        for parse in REASON_PARSERS {
            assert_eq!(
                parse(json!({"reason": "r", "comments": "c"})),
                Err(unknown("comments"))
            );
        }
        assert_eq!(
            reject(json!({"reason": "r", "rolled_back_by": ME})),
            Err(unknown("rolled_back_by"))
        );
        assert_eq!(
            rollback(json!({"reason": "r", "rejected_by": ME})),
            Err(unknown("rejected_by"))
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
    fn an_empty_post_body_posts_with_the_defaults() {
        for ok in ["", " \n", "{}", " { } "] {
            assert_eq!(
                parse_post_request(ok.as_bytes(), ME),
                Ok(PostRequest::default()),
                "{ok:?}"
            );
        }
        for bad in ["[]", "null", "1"] {
            assert_eq!(
                parse_post_request(bad.as_bytes(), ME),
                Err(RequestError::InvalidJson(
                    "expected a JSON object at the top level".into()
                )),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_post_request(b"{", ME),
            Err(RequestError::InvalidJson(_))
        ));
    }

    #[test]
    fn ap_intakes_post_body_is_parsed() {
        let body = json!({"posted_by": ME, "external_reference": "QB-12345",
                          "export_filename": "export_001.csv"});
        assert_eq!(
            post(body),
            Ok(PostRequest {
                external_reference: Some("QB-12345".into()),
                export_filename: Some("export_001.csv".into()),
            })
        );
        let nulls = json!({"posted_by": null, "external_reference": null, "export_filename": null});
        assert_eq!(post(nulls), Ok(PostRequest::default()));
    }

    #[test]
    fn post_body_fields_are_unknown_alphabetically_first() {
        assert_eq!(parse_post_request(b"{\"a\":1}", ME), Err(unknown("a")));
        assert_eq!(
            parse_post_request(b"{\"reason\":\"r\",\"force\":null}", ME),
            Err(unknown("force"))
        );
    }

    #[test]
    fn external_reference_is_a_short_single_line_string() {
        for v in [
            json!(""),
            json!("  "),
            json!("x".repeat(256)),
            json!(12345),
            json!("QB-1\r\nx-injected: 1"),
            json!("QB\u{0}1"),
        ] {
            assert_eq!(
                invalid_field(post(json!({ "external_reference": v }))),
                "external_reference"
            );
        }
        assert!(post(json!({"external_reference": "é".repeat(255)})).is_ok());
    }

    #[test]
    fn export_filename_is_a_plain_file_name() {
        for ok in [
            "export_001.csv",
            "Rechnung März 2026.csv",
            "a",
            ".hidden.csv",
            "v1.2.json",
            &"n".repeat(255),
            &format!("{}.csv", "é".repeat(125)),
        ] {
            assert_eq!(check_export_filename(ok), Ok(()), "{ok:?}");
            assert_eq!(
                post(json!({ "export_filename": ok }))
                    .unwrap()
                    .export_filename
                    .as_deref(),
                Some(ok)
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b.csv",
            "a\\b.csv",
            "C:\\x.csv",
            "a..b.csv",
            "x\n.csv",
            "x\r.csv",
            "x\u{0}.csv",
            "x\t.csv",
            "x\u{7f}.csv",
            "x\u{85}.csv",
            "invoice\u{202E}vsc.exe",
            "a\u{200B}.csv",
            "\u{FEFF}a.csv",
            "a\u{2067}.csv",
            "a\".csv",
            "a:b.csv",
            "a|b.csv",
            "a?.csv",
            "a*.csv",
            "<a>.csv",
            " a.csv",
            "a.csv ",
            "a.csv.",
            &"n".repeat(256),
            &format!("{}.csv", "é".repeat(126)),
        ] {
            assert!(check_export_filename(bad).is_err(), "{bad:?}");
            assert_eq!(
                invalid_field(post(json!({ "export_filename": bad }))),
                "export_filename",
                "{bad:?}"
            );
        }
        assert_eq!(
            invalid_field(post(json!({"export_filename": 7}))),
            "export_filename"
        );
    }

    // --- batch ---

    #[test]
    fn batch_items_are_returned_raw_and_unvalidated() {
        let req = batch(json!({"exports": [valid_stage(), {"junk": 1}, 3]}), 10).unwrap();
        assert_eq!(req.exports, [valid_stage(), json!({"junk": 1}), json!(3)]);
    }

    #[test]
    fn a_batch_item_staged_in_someone_elses_name_rejects_the_whole_batch() {
        let mut forged = valid_stage();
        forged["prepared_by"] = json!("mallory");
        let mut mine = valid_stage();
        mine["prepared_by"] = json!(ME);
        assert_eq!(
            batch(json!({"exports": [mine.clone(), forged]}), 10).unwrap_err(),
            not_the_caller("exports[1].prepared_by")
        );
        assert!(batch(json!({"exports": [mine, {"junk": 1}]}), 10).is_ok());
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

/// Edge-case request bodies (the largest Decimal, overflowing lines) and arbitrary
/// ones, taken the way the routes take
/// them: parse, then validate the export data, then (for a stage body) render it.
#[cfg(test)]
mod properties {
    use super::*;
    /// The token's subject in these properties.
    const ME: &str = "alice";
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
        if let Ok(req) = parse_stage_request(body, ME) {
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
        if let Ok(req) = parse_batch_request(body, max_batch, ME) {
            assert!(!req.exports.is_empty() && req.exports.len() <= max_batch);
            for (i, item) in req.exports.iter().enumerate() {
                if let Ok(r) = stage_request_from_value(item, &format!("exports[{i}]"), ME) {
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
        if let Ok(req) = parse_approve_request(body, ME) {
            if let Some(data) = &req.approved_data {
                let _ = validate_export_data(data);
            }
        }
        for parse in [parse_reject_request, parse_rollback_request] {
            if let Ok(reason) = parse(body, ME) {
                assert!(!reason.trim().is_empty());
            }
        }
        let _ = parse_review_request(body, ME);
        if let Ok(req) = parse_post_request(body, ME) {
            if let Some(name) = &req.export_filename {
                assert_eq!(check_export_filename(name), Ok(()));
            }
        }
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

        /// A post body is accepted only when its every field is a post field, and
        /// what it accepts keeps the documented guarantees.
        #[test]
        fn post_bodies_never_panic_and_only_post_fields_pass(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            v in json(),
        ) {
            let _ = parse_post_request(&bytes, ME);
            let only_post_fields = matches!(&v, Value::Object(m)
                if m.keys().all(|k| POST_FIELDS.contains(&k.as_str())));
            if let Ok(req) = parse_post_request(v.to_string().as_bytes(), ME) {
                prop_assert!(only_post_fields);
                if let Some(name) = &req.export_filename {
                    prop_assert_eq!(check_export_filename(name), Ok(()));
                }
                if let Some(r) = &req.external_reference {
                    prop_assert!(!r.chars().any(char::is_control));
                }
            }
        }

        #[test]
        fn file_names_that_pass_are_one_plain_path_component(name in text()) {
            if check_export_filename(&name).is_ok() {
                prop_assert!(!name.contains('/') && !name.contains('\\') && !name.contains(".."));
                prop_assert!(!name.chars().any(char::is_control));
                prop_assert!(!name.is_empty() && name.len() <= MAX_EXPORT_FILENAME_BYTES);
            }
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
                if let Ok(r) = stage_request_from_value(item, &prefix, ME) {
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

    /// The largest value a Decimal holds, as an invoice line's amount.
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
        let req = parse_stage_request(body.as_bytes(), ME).unwrap();
        let v = validate_export_data(&req.export_data).unwrap();
        assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
        assert_eq!(
            (v.errors[0].field.as_str(), v.errors[0].code),
            ("line_items[0].amount", "line_amount_mismatch")
        );
        assert!(v.quality_score < 70);

        let body = json!({"exports": [overflow_item(), overflow_item()]}).to_string();
        let req = parse_batch_request(body.as_bytes(), 10, ME).unwrap();
        for (i, item) in req.exports.iter().enumerate() {
            let r = stage_request_from_value(item, &format!("exports[{i}]"), ME).unwrap();
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
            let req = parse_stage_request(item.to_string().as_bytes(), ME).unwrap();
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
