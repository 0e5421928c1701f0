//! Parsing and validation of the training request bodies:
//!
//! - `POST /v1/training-data` → [`parse_dataset_request`]:
//!   `{"document_ids": ["doc_1"], "format": "chat", "min_chars": 20, "max_examples": 500}`
//! - `POST /v1/training-jobs` → [`parse_job_request`]:
//!   `{"dataset_id": "ds_1", "base_model": "m", "hyperparameters":
//!   {"epochs": 3, "learning_rate": 0.0001, "batch_size": 8}}`
//! - `POST /v1/training-jobs/{id}/events` → [`parse_event_request`]:
//!   `{"event_id": "e-1", "type": "progress", "step": 10, "metrics": {"loss": 0.4}}`
//!
//! The rules every typed body follows (a JSON object; unknown fields rejected,
//! alphabetically first; `null` is absent; integers are JSON integers; string
//! limits in chars, "non-empty" after trimming) are [`crate::request_body`]'s.

use std::collections::HashSet;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::examples::Format;
use crate::request_body::{
    field, invalid, missing, parse_object, parse_optional_object, reject_unknown, required_text,
    u32_in, RequestError,
};

/// Most distinct documents one data set may be built from.
pub const MAX_DATASET_DOCUMENTS: usize = 50;
/// Largest accepted `max_examples`.
pub const MAX_DATASET_EXAMPLES: usize = 100_000;
/// Longest accepted `base_model`, in chars.
pub const MAX_BASE_MODEL_CHARS: usize = 200;
/// Accepted `hyperparameters.epochs`.
pub const EPOCHS_RANGE: RangeInclusive<u32> = 1..=100;
/// Accepted `hyperparameters.batch_size`.
pub const BATCH_SIZE_RANGE: RangeInclusive<u32> = 1..=4096;
/// Longest accepted `event_id`, in chars (all ASCII, so also bytes).
pub const MAX_EVENT_ID_CHARS: usize = 255;
/// Longest accepted `artifact` of a `succeeded` event, in chars.
pub const MAX_ARTIFACT_CHARS: usize = 2048;
/// Longest accepted `error` of a `failed` event, in chars.
pub const MAX_ERROR_CHARS: usize = 4096;

/// A validated `POST /v1/training-data` body.
///
/// `document_ids` is non-empty, holds at most [`MAX_DATASET_DOCUMENTS`] distinct
/// non-blank ids in first-occurrence order; `max_examples`, if set, is in
/// `1..=MAX_DATASET_EXAMPLES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRequest {
    pub document_ids: Vec<String>,
    pub format: Format,
    /// 0 when absent. Values beyond `usize::MAX` saturate (no example is that long,
    /// so the meaning, "drop everything", is unchanged).
    pub min_chars: usize,
    pub max_examples: Option<usize>,
}

/// Fine-tuning hyperparameters, each required and range-checked.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// In [`EPOCHS_RANGE`].
    pub epochs: u32,
    /// In `(0, 1]`; finite, since JSON has no NaN or infinity.
    pub learning_rate: f64,
    /// In [`BATCH_SIZE_RANGE`].
    pub batch_size: u32,
}

/// A validated `POST /v1/training-jobs` body. `dataset_id` is non-blank (its
/// existence is the caller's to check); `base_model` is non-blank and at most
/// [`MAX_BASE_MODEL_CHARS`] chars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub dataset_id: String,
    pub base_model: String,
    pub hyperparameters: Hyperparameters,
}

/// What a trainer reports about a job, with the fields its type requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobEventKind {
    Claimed,
    Running,
    /// `metrics` holds JSON numbers only; empty when the body had none.
    Progress {
        step: u64,
        metrics: Map<String, Value>,
    },
    /// `artifact` is non-blank, at most [`MAX_ARTIFACT_CHARS`] chars.
    Succeeded {
        artifact: String,
    },
    /// `error` is non-blank, at most [`MAX_ERROR_CHARS`] chars.
    Failed {
        error: String,
    },
}

impl JobEventKind {
    /// The wire `type`: `claimed`, `running`, `progress`, `succeeded` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Running => "running",
            Self::Progress { .. } => "progress",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
        }
    }

    /// The type-specific fields as a JSON object: `{}` for claimed and running,
    /// `{"step", "metrics"}` for progress (`metrics` always present, possibly `{}`),
    /// `{"artifact"}` for succeeded and `{"error"}` for failed.
    pub fn payload(&self) -> Value {
        let mut obj = Map::new();
        match self {
            Self::Claimed | Self::Running => {}
            Self::Progress { step, metrics } => {
                obj.insert("step".to_owned(), Value::from(*step));
                obj.insert("metrics".to_owned(), Value::Object(metrics.clone()));
            }
            Self::Succeeded { artifact } => {
                obj.insert("artifact".to_owned(), Value::from(artifact.as_str()));
            }
            Self::Failed { error } => {
                obj.insert("error".to_owned(), Value::from(error.as_str()));
            }
        }
        Value::Object(obj)
    }
}

/// A validated `POST /v1/training-jobs/{id}/events` body.
///
/// `event_id` is 1..=[`MAX_EVENT_ID_CHARS`] chars of `A-Za-z0-9-_.:~+/=`: the
/// trainer's idempotency key for the event, safe to store and echo unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEventRequest {
    pub event_id: String,
    pub kind: JobEventKind,
}

pub const DATASET_FIELDS: [&str; 4] = ["document_ids", "format", "min_chars", "max_examples"];
pub const JOB_FIELDS: [&str; 3] = ["dataset_id", "base_model", "hyperparameters"];
pub const HYPERPARAMETER_FIELDS: [&str; 3] = ["epochs", "learning_rate", "batch_size"];
/// Every field any event type may carry; which of the last four are allowed
/// depends on `type` (see [`event_fields`]).
pub const EVENT_FIELDS: [&str; 6] = ["event_id", "type", "step", "metrics", "artifact", "error"];

/// Parses and validates a `POST /v1/training-data` body.
///
/// Checked in order: unknown fields, `document_ids`, `format`, `min_chars`,
/// `max_examples`. The document limit applies after duplicates are removed.
pub fn parse_dataset_request(body: &[u8]) -> Result<DatasetRequest, RequestError> {
    let obj = parse_object(body)?;
    reject_unknown(&obj, &DATASET_FIELDS, "")?;

    let document_ids = parse_document_ids(&obj)?;
    let format = match field(&obj, "format") {
        None => return Err(missing("format")),
        Some(v) => v
            .as_str()
            .and_then(Format::parse)
            .ok_or_else(|| invalid("format", "must be \"chunks\" or \"chat\""))?,
    };
    let min_chars = match field(&obj, "min_chars") {
        None => 0,
        Some(v) => v
            .as_u64()
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .ok_or_else(|| invalid("min_chars", "must be an integer at least 0"))?,
    };
    let max_examples = match field(&obj, "max_examples") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=MAX_DATASET_EXAMPLES as u64).contains(n))
                // In range, so the cast is lossless on every target.
                .map(|n| n as usize)
                .ok_or_else(|| {
                    invalid(
                        "max_examples",
                        format!("must be an integer from 1 to {MAX_DATASET_EXAMPLES}"),
                    )
                })?,
        ),
    };
    Ok(DatasetRequest {
        document_ids,
        format,
        min_chars,
        max_examples,
    })
}

fn parse_document_ids(obj: &Map<String, Value>) -> Result<Vec<String>, RequestError> {
    let items = match field(obj, "document_ids") {
        None => return Err(missing("document_ids")),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("document_ids", "must be an array of strings")),
    };
    if items.is_empty() {
        return Err(invalid("document_ids", "must not be empty"));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = item
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid(format!("document_ids[{i}]"), "must be a non-empty string"))?;
        if seen.insert(id) {
            ids.push(id.to_owned());
        }
    }
    if ids.len() > MAX_DATASET_DOCUMENTS {
        return Err(invalid(
            "document_ids",
            format!("must name at most {MAX_DATASET_DOCUMENTS} distinct documents"),
        ));
    }
    Ok(ids)
}

/// Parses and validates a `POST /v1/training-jobs` body.
///
/// Checked in order: unknown top-level fields, `dataset_id`, `base_model`,
/// `hyperparameters` (its unknown fields, then `epochs`, `learning_rate`,
/// `batch_size`).
pub fn parse_job_request(body: &[u8]) -> Result<JobRequest, RequestError> {
    let obj = parse_object(body)?;
    reject_unknown(&obj, &JOB_FIELDS, "")?;

    let dataset_id = required_text(&obj, "dataset_id", "dataset_id", None)?;
    let base_model = required_text(&obj, "base_model", "base_model", Some(MAX_BASE_MODEL_CHARS))?;
    let hp = match field(&obj, "hyperparameters") {
        None => return Err(missing("hyperparameters")),
        Some(Value::Object(hp)) => hp,
        Some(_) => return Err(invalid("hyperparameters", "must be an object")),
    };
    reject_unknown(hp, &HYPERPARAMETER_FIELDS, "hyperparameters.")?;

    let epochs = bounded_u32(hp, "epochs", "hyperparameters.epochs", EPOCHS_RANGE)?;
    let learning_rate = match field(hp, "learning_rate") {
        None => return Err(missing("hyperparameters.learning_rate")),
        Some(v) => v
            .as_f64()
            .filter(|r| *r > 0.0 && *r <= 1.0)
            .ok_or_else(|| {
                invalid(
                    "hyperparameters.learning_rate",
                    "must be a number greater than 0 and at most 1",
                )
            })?,
    };
    let batch_size = bounded_u32(
        hp,
        "batch_size",
        "hyperparameters.batch_size",
        BATCH_SIZE_RANGE,
    )?;

    Ok(JobRequest {
        dataset_id,
        base_model,
        hyperparameters: Hyperparameters {
            epochs,
            learning_rate,
            batch_size,
        },
    })
}

/// Parses and validates a `POST /v1/training-jobs/{id}/events` body.
///
/// Checked in order: fields no event type defines, `event_id`, `type`, fields
/// present (non-null) that this type does not define (→ `UnknownField`, e.g.
/// `artifact` on a progress event), then the type's own fields. Whether the event is
/// allowed in the job's current state is not checked here (see
/// [`super::jobs::transition`]).
pub fn parse_event_request(body: &[u8]) -> Result<JobEventRequest, RequestError> {
    let obj = parse_object(body)?;
    reject_unknown(&obj, &EVENT_FIELDS, "")?;

    let event_id = parse_event_id(&obj)?;
    let type_name = match field(&obj, "type") {
        None => return Err(missing("type")),
        Some(v) => v
            .as_str()
            .filter(|t| event_fields(t).is_some())
            .ok_or_else(|| {
                invalid(
                    "type",
                    "must be one of \"claimed\", \"running\", \"progress\", \"succeeded\", \
                     \"failed\"",
                )
            })?,
    };
    let allowed = event_fields(type_name).unwrap_or(&[]);
    if let Some(extra) = obj
        .iter()
        .filter(|(k, v)| !v.is_null() && !allowed.contains(&k.as_str()))
        .map(|(k, _)| k)
        .filter(|k| *k != "event_id" && *k != "type")
        .min()
    {
        return Err(RequestError::UnknownField(extra.clone()));
    }

    let kind = match type_name {
        "claimed" => JobEventKind::Claimed,
        "running" => JobEventKind::Running,
        "progress" => JobEventKind::Progress {
            step: match field(&obj, "step") {
                None => return Err(missing("step")),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| invalid("step", "must be an integer at least 0"))?,
            },
            metrics: parse_metrics(&obj)?,
        },
        "succeeded" => JobEventKind::Succeeded {
            artifact: required_text(&obj, "artifact", "artifact", Some(MAX_ARTIFACT_CHARS))?,
        },
        _ => JobEventKind::Failed {
            error: required_text(&obj, "error", "error", Some(MAX_ERROR_CHARS))?,
        },
    };
    Ok(JobEventRequest { event_id, kind })
}

/// The type-specific fields an event `type` may carry, or `None` for an unknown type.
fn event_fields(type_name: &str) -> Option<&'static [&'static str]> {
    match type_name {
        "claimed" | "running" => Some(&[]),
        "progress" => Some(&["step", "metrics"]),
        "succeeded" => Some(&["artifact"]),
        "failed" => Some(&["error"]),
        _ => None,
    }
}

fn parse_event_id(obj: &Map<String, Value>) -> Result<String, RequestError> {
    let id = match field(obj, "event_id") {
        None => return Err(missing("event_id")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("event_id", "must be a string")),
    };
    // Alphabet first: once it holds, bytes are chars and the length check is exact.
    if !id.bytes().all(is_event_id_byte) {
        return Err(invalid(
            "event_id",
            "may contain only A-Z, a-z, 0-9 and - _ . : ~ + / =",
        ));
    }
    if id.is_empty() || id.len() > MAX_EVENT_ID_CHARS {
        return Err(invalid(
            "event_id",
            format!("must be 1 to {MAX_EVENT_ID_CHARS} characters"),
        ));
    }
    Ok(id.clone())
}

fn is_event_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.:~+/=".contains(&b)
}

fn parse_metrics(obj: &Map<String, Value>) -> Result<Map<String, Value>, RequestError> {
    match field(obj, "metrics") {
        None => Ok(Map::new()),
        Some(Value::Object(metrics)) => {
            // Alphabetically first offender, whatever the map's iteration order.
            if let Some(name) = metrics
                .iter()
                .filter(|(_, v)| !v.is_number())
                .map(|(k, _)| k)
                .min()
            {
                return Err(invalid(format!("metrics.{name}"), "must be a number"));
            }
            Ok(metrics.clone())
        }
        Some(_) => Err(invalid(
            "metrics",
            "must be an object of numbers, e.g. {\"loss\": 0.5}",
        )),
    }
}

/// A required JSON integer within `range`.
fn bounded_u32(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
    range: RangeInclusive<u32>,
) -> Result<u32, RequestError> {
    u32_in(field(obj, name).ok_or_else(|| missing(path))?, path, range)
}

/// Longest accepted cancel `reason`, in chars.
pub const MAX_CANCEL_REASON_CHARS: usize = 1000;

/// Parses a `POST /v1/training-jobs/{id}/cancel` body: empty, `{}`, or
/// `{"reason": "…"}` (any string of at most [`MAX_CANCEL_REASON_CHARS`] chars; `null`
/// is no reason).
pub fn parse_cancel_request(body: &[u8]) -> Result<Option<String>, RequestError> {
    let obj = parse_optional_object(body)?;
    reject_unknown(&obj, &["reason"], "")?;
    match obj.get("reason") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(r)) if r.chars().count() <= MAX_CANCEL_REASON_CHARS => {
            Ok(Some(r.clone()))
        }
        Some(_) => Err(invalid(
            "reason",
            format!("must be a string of at most {MAX_CANCEL_REASON_CHARS} chars"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fmt;

    fn dataset(body: Value) -> Result<DatasetRequest, RequestError> {
        parse_dataset_request(body.to_string().as_bytes())
    }

    fn job(body: Value) -> Result<JobRequest, RequestError> {
        parse_job_request(body.to_string().as_bytes())
    }

    fn event(body: Value) -> Result<JobEventRequest, RequestError> {
        parse_event_request(body.to_string().as_bytes())
    }

    fn invalid_field<T: fmt::Debug>(result: Result<T, RequestError>) -> String {
        match result {
            Err(RequestError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    fn valid_job() -> Value {
        json!({
            "dataset_id": "ds_1",
            "base_model": "llama-3.1-8b",
            "hyperparameters": {"epochs": 3, "learning_rate": 0.0001, "batch_size": 8}
        })
    }

    // --- all bodies ---

    #[test]
    fn deeply_nested_bodies_are_invalid_json_not_a_crash() {
        for body in [
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!(r#"{{"metrics":{}}}"#, "[".repeat(100_000)),
            format!(
                r#"{{"hyperparameters":{}1{}}}"#,
                "{\"a\":".repeat(100_000),
                "}".repeat(100_000)
            ),
        ] {
            for result in [
                parse_dataset_request(body.as_bytes()).map(|_| ()),
                parse_job_request(body.as_bytes()).map(|_| ()),
                parse_event_request(body.as_bytes()).map(|_| ()),
            ] {
                assert!(matches!(result, Err(RequestError::InvalidJson(_))));
            }
        }
    }

    #[test]
    fn non_object_or_broken_json_is_invalid_json_for_every_parser() {
        for body in ["", "[]", "\"x\"", "42", "null", "{", "{\"format\":}"] {
            let b = body.as_bytes();
            assert!(
                matches!(parse_dataset_request(b), Err(RequestError::InvalidJson(_))),
                "{body:?}"
            );
            assert!(
                matches!(parse_job_request(b), Err(RequestError::InvalidJson(_))),
                "{body:?}"
            );
            assert!(
                matches!(parse_event_request(b), Err(RequestError::InvalidJson(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn errors_display_a_readable_message_and_name_their_field() {
        let err = RequestError::UnknownField("hyperparameters.momentum".into());
        assert_eq!(err.to_string(), "unknown field `hyperparameters.momentum`");
        assert_eq!(err.field(), Some("hyperparameters.momentum"));
        assert_eq!(
            missing("format").to_string(),
            "missing required field `format`"
        );
        assert_eq!(
            invalid("step", "too big").to_string(),
            "invalid field `step`: too big"
        );
        assert_eq!(RequestError::InvalidJson("x".into()).field(), None);
    }

    // --- dataset ---

    #[test]
    fn minimal_dataset_request_uses_defaults() {
        let req = dataset(json!({"document_ids": ["a"], "format": "chunks"})).unwrap();
        assert_eq!(
            req,
            DatasetRequest {
                document_ids: vec!["a".into()],
                format: Format::Chunks,
                min_chars: 0,
                max_examples: None,
            }
        );
    }

    #[test]
    fn full_dataset_request_is_parsed() {
        let req = dataset(json!({
            "document_ids": ["a", "b"], "format": "chat", "min_chars": 20, "max_examples": 500
        }))
        .unwrap();
        assert_eq!(req.document_ids, ["a", "b"]);
        assert_eq!(req.format, Format::Chat);
        assert_eq!(req.min_chars, 20);
        assert_eq!(req.max_examples, Some(500));
    }

    #[test]
    fn duplicate_document_ids_are_removed_keeping_first_occurrence() {
        let req =
            dataset(json!({"document_ids": ["b", "a", "b", "c", "a"], "format": "chat"})).unwrap();
        assert_eq!(req.document_ids, ["b", "a", "c"]);
    }

    #[test]
    fn document_ids_must_be_a_non_empty_array_of_non_empty_strings() {
        assert_eq!(
            dataset(json!({"format": "chat"})).unwrap_err(),
            missing("document_ids")
        );
        for ids in [json!([]), json!("a"), json!({"a": 1})] {
            assert_eq!(
                invalid_field(dataset(json!({"document_ids": ids, "format": "chat"}))),
                "document_ids"
            );
        }
        for (ids, path) in [
            (json!(["a", ""]), "document_ids[1]"),
            (json!(["  "]), "document_ids[0]"),
            (json!(["a", "b", 3]), "document_ids[2]"),
            (json!([null]), "document_ids[0]"),
        ] {
            assert_eq!(
                invalid_field(dataset(json!({"document_ids": ids, "format": "chat"}))),
                path
            );
        }
    }

    #[test]
    fn at_most_fifty_distinct_document_ids_are_accepted() {
        let ids = |n: usize| (0..n).map(|i| format!("d{i}")).collect::<Vec<_>>();
        let ok = dataset(json!({"document_ids": ids(50), "format": "chat"})).unwrap();
        assert_eq!(ok.document_ids.len(), MAX_DATASET_DOCUMENTS);
        assert_eq!(
            invalid_field(dataset(json!({"document_ids": ids(51), "format": "chat"}))),
            "document_ids"
        );
        // The limit counts distinct ids: 50 ids sent twice are fine.
        let mut twice = ids(50);
        twice.extend(ids(50));
        assert!(dataset(json!({"document_ids": twice, "format": "chat"})).is_ok());
    }

    #[test]
    fn format_is_required_and_must_be_chunks_or_chat() {
        assert_eq!(
            dataset(json!({"document_ids": ["a"]})).unwrap_err(),
            missing("format")
        );
        for format in [json!("CHAT"), json!("jsonl"), json!(1), json!(["chat"])] {
            assert_eq!(
                invalid_field(dataset(json!({"document_ids": ["a"], "format": format}))),
                "format"
            );
        }
    }

    #[test]
    fn min_chars_must_be_a_non_negative_integer() {
        for v in [json!(-1), json!(2.0), json!("5"), json!(true)] {
            assert_eq!(
                invalid_field(dataset(
                    json!({"document_ids": ["a"], "format": "chat", "min_chars": v})
                )),
                "min_chars",
                "{v}"
            );
        }
        let req = dataset(json!({"document_ids": ["a"], "format": "chat", "min_chars": u64::MAX}))
            .unwrap();
        assert_eq!(
            req.min_chars,
            usize::try_from(u64::MAX).unwrap_or(usize::MAX)
        );
    }

    #[test]
    fn max_examples_must_be_an_integer_from_1_to_100000() {
        for v in [
            json!(0),
            json!(100_001),
            json!(-5),
            json!(10.0),
            json!("10"),
        ] {
            assert_eq!(
                invalid_field(dataset(
                    json!({"document_ids": ["a"], "format": "chat", "max_examples": v})
                )),
                "max_examples",
                "{v}"
            );
        }
        for n in [1, 100_000] {
            let req = dataset(json!({"document_ids": ["a"], "format": "chat", "max_examples": n}))
                .unwrap();
            assert_eq!(req.max_examples, Some(n));
        }
    }

    #[test]
    fn null_dataset_fields_are_treated_as_absent() {
        let req = dataset(json!({
            "document_ids": ["a"], "format": "chat", "min_chars": null, "max_examples": null
        }))
        .unwrap();
        assert_eq!((req.min_chars, req.max_examples), (0, None));
        assert_eq!(
            dataset(json!({"document_ids": null, "format": "chat"})).unwrap_err(),
            missing("document_ids")
        );
    }

    #[test]
    fn unknown_dataset_field_is_reported_alphabetically_first() {
        let err = dataset(json!({
            "document_ids": ["a"], "format": "chat", "zeta": 1, "maxExamples": 2
        }))
        .unwrap_err();
        assert_eq!(err, RequestError::UnknownField("maxExamples".into()));
    }

    // --- job ---

    #[test]
    fn valid_job_request_is_parsed() {
        assert_eq!(
            job(valid_job()).unwrap(),
            JobRequest {
                dataset_id: "ds_1".into(),
                base_model: "llama-3.1-8b".into(),
                hyperparameters: Hyperparameters {
                    epochs: 3,
                    learning_rate: 0.0001,
                    batch_size: 8
                },
            }
        );
    }

    #[test]
    fn hyperparameters_serialize_with_their_field_names() {
        let hp = job(valid_job()).unwrap().hyperparameters;
        assert_eq!(
            serde_json::to_value(hp).unwrap(),
            json!({"epochs": 3, "learning_rate": 0.0001, "batch_size": 8})
        );
    }

    #[test]
    fn missing_job_fields_are_named_with_their_path() {
        for (remove, path) in [
            ("/dataset_id", "dataset_id"),
            ("/base_model", "base_model"),
            ("/hyperparameters", "hyperparameters"),
            ("/hyperparameters/epochs", "hyperparameters.epochs"),
            (
                "/hyperparameters/learning_rate",
                "hyperparameters.learning_rate",
            ),
            ("/hyperparameters/batch_size", "hyperparameters.batch_size"),
        ] {
            let mut body = valid_job();
            let (parent, key) = remove.rsplit_once('/').unwrap();
            body.pointer_mut(parent)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(key);
            assert_eq!(job(body).unwrap_err(), missing(path), "{remove}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected_at_both_levels_by_dotted_path() {
        let mut body = valid_job();
        body["hyperparameters"]["momentum"] = json!(0.9);
        assert_eq!(
            job(body).unwrap_err(),
            RequestError::UnknownField("hyperparameters.momentum".into())
        );
        let mut body = valid_job();
        body["model"] = json!("x");
        assert_eq!(
            job(body).unwrap_err(),
            RequestError::UnknownField("model".into())
        );
    }

    #[test]
    fn job_strings_must_be_non_blank_and_base_model_at_most_200_chars() {
        for (key, v) in [
            ("dataset_id", json!("")),
            ("dataset_id", json!(" ")),
            ("dataset_id", json!(7)),
            ("base_model", json!("")),
            ("base_model", json!("m".repeat(201))),
            ("base_model", json!(["m"])),
        ] {
            let mut body = valid_job();
            body[key] = v;
            assert_eq!(invalid_field(job(body)), key);
        }
        let mut body = valid_job();
        body["base_model"] = json!("é".repeat(200));
        assert!(job(body).is_ok());
    }

    #[test]
    fn hyperparameters_must_be_an_object() {
        let mut body = valid_job();
        body["hyperparameters"] = json!([3, 0.1, 8]);
        assert_eq!(invalid_field(job(body)), "hyperparameters");
    }

    #[test]
    fn integer_hyperparameters_must_be_json_integers_in_range() {
        for (key, v) in [
            ("epochs", json!(0)),
            ("epochs", json!(101)),
            ("epochs", json!(3.0)),
            ("epochs", json!(-1)),
            ("epochs", json!("3")),
            ("batch_size", json!(0)),
            ("batch_size", json!(4097)),
            ("batch_size", json!(8.0)),
            ("batch_size", json!(u64::MAX)),
        ] {
            let mut body = valid_job();
            body["hyperparameters"][key] = v.clone();
            assert_eq!(
                invalid_field(job(body)),
                format!("hyperparameters.{key}"),
                "{key}={v}"
            );
        }
        // `3.0` survives `json!` as a float; check the raw text form too.
        let raw = br#"{"dataset_id":"d","base_model":"m",
            "hyperparameters":{"epochs":1e1,"learning_rate":0.1,"batch_size":8}}"#;
        assert_eq!(
            invalid_field(parse_job_request(raw)),
            "hyperparameters.epochs"
        );
        for (epochs, batch) in [(1, 1), (100, 4096)] {
            let mut body = valid_job();
            body["hyperparameters"]["epochs"] = json!(epochs);
            body["hyperparameters"]["batch_size"] = json!(batch);
            let hp = job(body).unwrap().hyperparameters;
            assert_eq!((hp.epochs, hp.batch_size), (epochs, batch));
        }
    }

    #[test]
    fn learning_rate_must_be_in_zero_exclusive_to_one_inclusive() {
        for v in [
            json!(0),
            json!(0.0),
            json!(-0.1),
            json!(1.0001),
            json!("0.1"),
        ] {
            let mut body = valid_job();
            body["hyperparameters"]["learning_rate"] = v.clone();
            assert_eq!(
                invalid_field(job(body)),
                "hyperparameters.learning_rate",
                "{v}"
            );
        }
        for (v, expected) in [(json!(1), 1.0), (json!(1e-6), 1e-6), (json!(0.5), 0.5)] {
            let mut body = valid_job();
            body["hyperparameters"]["learning_rate"] = v;
            assert_eq!(job(body).unwrap().hyperparameters.learning_rate, expected);
        }
    }

    // --- events ---

    #[test]
    fn claimed_and_running_events_have_empty_payloads() {
        for (t, kind) in [
            ("claimed", JobEventKind::Claimed),
            ("running", JobEventKind::Running),
        ] {
            let req = event(json!({"event_id": "e1", "type": t})).unwrap();
            assert_eq!(req.event_id, "e1");
            assert_eq!(req.kind, kind);
            assert_eq!(req.kind.name(), t);
            assert_eq!(req.kind.payload(), json!({}));
        }
    }

    #[test]
    fn progress_event_carries_step_and_numeric_metrics() {
        let req = event(json!({
            "event_id": "job-1:step-10", "type": "progress", "step": 10,
            "metrics": {"loss": 0.42, "tokens": 1000}
        }))
        .unwrap();
        assert_eq!(req.kind.name(), "progress");
        assert_eq!(
            req.kind.payload(),
            json!({"step": 10, "metrics": {"loss": 0.42, "tokens": 1000}})
        );
        let req = event(json!({"event_id": "e", "type": "progress", "step": 0})).unwrap();
        assert_eq!(
            req.kind,
            JobEventKind::Progress {
                step: 0,
                metrics: Map::new()
            }
        );
        assert_eq!(req.kind.payload(), json!({"step": 0, "metrics": {}}));
    }

    #[test]
    fn progress_step_is_required_and_a_non_negative_integer() {
        assert_eq!(
            event(json!({"event_id": "e", "type": "progress"})).unwrap_err(),
            missing("step")
        );
        for step in [json!(-1), json!(1.5), json!(2.0), json!("3")] {
            assert_eq!(
                invalid_field(event(
                    json!({"event_id": "e", "type": "progress", "step": step})
                )),
                "step"
            );
        }
    }

    #[test]
    fn metrics_must_be_an_object_of_numbers() {
        let body = |m: Value| json!({"event_id": "e", "type": "progress", "step": 1, "metrics": m});
        assert_eq!(invalid_field(event(body(json!([1, 2])))), "metrics");
        assert_eq!(
            invalid_field(event(body(json!({"loss": 0.1, "b": "x", "a": null})))),
            "metrics.a"
        );
        assert_eq!(
            invalid_field(event(body(json!({"nested": {"x": 1}})))),
            "metrics.nested"
        );
    }

    #[test]
    fn succeeded_requires_a_non_empty_artifact_of_at_most_2048_chars() {
        let body = |a: Value| json!({"event_id": "e", "type": "succeeded", "artifact": a});
        let req = event(body(json!("r2://models/job-1"))).unwrap();
        assert_eq!(
            req.kind,
            JobEventKind::Succeeded {
                artifact: "r2://models/job-1".into()
            }
        );
        assert_eq!(req.kind.payload(), json!({"artifact": "r2://models/job-1"}));
        assert_eq!(
            event(json!({"event_id": "e", "type": "succeeded"})).unwrap_err(),
            missing("artifact")
        );
        for a in [json!(""), json!("x".repeat(2049)), json!(1)] {
            assert_eq!(invalid_field(event(body(a))), "artifact");
        }
        assert!(event(body(json!("x".repeat(2048)))).is_ok());
    }

    #[test]
    fn failed_requires_a_non_empty_error_of_at_most_4096_chars() {
        let body = |e: Value| json!({"event_id": "e", "type": "failed", "error": e});
        let req = event(body(json!("CUDA out of memory"))).unwrap();
        assert_eq!(req.kind.name(), "failed");
        assert_eq!(req.kind.payload(), json!({"error": "CUDA out of memory"}));
        assert_eq!(
            event(json!({"event_id": "e", "type": "failed"})).unwrap_err(),
            missing("error")
        );
        for e in [json!("  "), json!("x".repeat(4097)), json!({})] {
            assert_eq!(invalid_field(event(body(e))), "error");
        }
        assert!(event(body(json!("é".repeat(4096)))).is_ok());
    }

    #[test]
    fn fields_of_another_event_type_are_unknown_fields() {
        for (body, field) in [
            (
                json!({"event_id": "e", "type": "progress", "step": 1, "artifact": "a"}),
                "artifact",
            ),
            (
                json!({"event_id": "e", "type": "claimed", "step": 1}),
                "step",
            ),
            (
                json!({"event_id": "e", "type": "running", "metrics": {}}),
                "metrics",
            ),
            (
                json!({"event_id": "e", "type": "succeeded", "artifact": "a", "error": "x"}),
                "error",
            ),
            (
                json!({"event_id": "e", "type": "failed", "error": "x", "step": 2}),
                "step",
            ),
        ] {
            assert_eq!(
                event(body).unwrap_err(),
                RequestError::UnknownField(field.into())
            );
        }
        // Null is absent, so clients serialising every optional field still work.
        assert!(event(json!({"event_id": "e", "type": "running", "artifact": null})).is_ok());
    }

    #[test]
    fn fields_no_event_defines_are_unknown_fields() {
        assert_eq!(
            event(json!({"event_id": "e", "type": "running", "progress": 1})).unwrap_err(),
            RequestError::UnknownField("progress".into())
        );
    }

    #[test]
    fn event_type_is_required_and_must_be_known() {
        assert_eq!(
            event(json!({"event_id": "e"})).unwrap_err(),
            missing("type")
        );
        for t in [json!("cancel"), json!("Running"), json!(1)] {
            assert_eq!(
                invalid_field(event(json!({"event_id": "e", "type": t}))),
                "type"
            );
        }
    }

    #[test]
    fn event_id_is_1_to_255_chars_of_a_safe_alphabet() {
        assert_eq!(
            event(json!({"type": "running"})).unwrap_err(),
            missing("event_id")
        );
        for id in [
            json!(""),
            json!("a".repeat(256)),
            json!("has space"),
            json!("é"),
            json!("a\nb"),
            json!("semi;colon"),
            json!(5),
        ] {
            assert_eq!(
                invalid_field(event(json!({"event_id": id, "type": "running"}))),
                "event_id",
                "{id}"
            );
        }
        for id in ["a".repeat(255), "AZaz09-_.:~+/=".to_owned(), "x".to_owned()] {
            assert_eq!(
                event(json!({"event_id": id, "type": "running"}))
                    .unwrap()
                    .event_id,
                id
            );
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn json_str(s: String) -> String {
            Value::from(s).to_string()
        }

        /// Scalars, odd and huge ones included.
        fn scalar() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("null".to_owned()),
                Just("false".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("-9223372036854775809".to_owned()),
                Just("1e308".to_owned()),
                Just("1e-400".to_owned()),
                Just("4.9e-324".to_owned()),
                Just("-0".to_owned()),
                Just("1.0".to_owned()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                (0u64..200).prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| Value::from(f).to_string()),
                (0.0f64..=1.0).prop_map(|f| Value::from(f).to_string()),
                prop::sample::select(vec![
                    "chat",
                    "chunks",
                    "claimed",
                    "running",
                    "progress",
                    "succeeded",
                    "failed",
                ])
                .prop_map(|s| json_str(s.to_owned())),
                "[A-Za-z0-9_.:~+/=-]{0,300}".prop_map(json_str),
                "[ \t]{0,2}.{0,300}".prop_map(json_str),
                any::<String>().prop_map(json_str),
            ]
        }

        fn name() -> impl Strategy<Value = String> {
            let known: Vec<&str> = DATASET_FIELDS
                .iter()
                .chain(&JOB_FIELDS)
                .chain(&HYPERPARAMETER_FIELDS)
                .chain(&EVENT_FIELDS)
                .copied()
                .collect();
            prop_oneof![
                4 => prop::sample::select(known).prop_map(str::to_owned),
                1 => "[a-z_]{0,10}",
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            scalar().prop_recursive(3, 64, 60, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..60)
                        .prop_map(|items| format!("[{}]", items.join(","))),
                    prop::collection::vec((name(), inner), 0..6).prop_map(|fields| {
                        let parts: Vec<String> = fields
                            .iter()
                            .map(|(k, v)| format!("{}:{v}", json_str(k.clone())))
                            .collect();
                        format!("{{{}}}", parts.join(","))
                    }),
                ]
            })
        }

        fn body() -> impl Strategy<Value = String> {
            prop::collection::vec((name(), value()), 0..7).prop_map(|fields| {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_str(k.clone())))
                    .collect();
                format!("{{{}}}", parts.join(","))
            })
        }

        fn parse_all(body: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(d) = parse_dataset_request(body) {
                prop_assert!(!d.document_ids.is_empty());
                prop_assert!(d.document_ids.len() <= MAX_DATASET_DOCUMENTS);
                prop_assert!(d
                    .max_examples
                    .is_none_or(|n| (1..=MAX_DATASET_EXAMPLES).contains(&n)));
            }
            if let Ok(j) = parse_job_request(body) {
                let hp = j.hyperparameters;
                prop_assert!(EPOCHS_RANGE.contains(&hp.epochs));
                prop_assert!(BATCH_SIZE_RANGE.contains(&hp.batch_size));
                prop_assert!(hp.learning_rate > 0.0 && hp.learning_rate <= 1.0);
                prop_assert!(j.base_model.chars().count() <= MAX_BASE_MODEL_CHARS);
            }
            if let Ok(e) = parse_event_request(body) {
                prop_assert!(!e.event_id.is_empty() && e.event_id.len() <= MAX_EVENT_ID_CHARS);
                let _ = e.kind.payload();
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
                parse_all(&body)?;
            }

            #[test]
            fn odd_bodies_never_panic_and_accepted_ones_keep_the_invariants(body in body()) {
                parse_all(body.as_bytes())?;
            }

            #[test]
            fn plausible_bodies_keep_the_invariants(
                ids in prop::collection::vec("[a-c ]{0,2}", 0..80),
                format in scalar(),
                min_chars in scalar(),
                max_examples in scalar(),
                epochs in scalar(),
                rate in scalar(),
                batch in scalar(),
                event in (scalar(), scalar(), scalar(), value()),
            ) {
                let ids: Vec<String> = ids.into_iter().map(json_str).collect();
                let dataset = format!(
                    r#"{{"document_ids":[{}],"format":{format},"min_chars":{min_chars},"max_examples":{max_examples}}}"#,
                    ids.join(",")
                );
                parse_all(dataset.as_bytes())?;
                let job = format!(
                    r#"{{"dataset_id":"ds","base_model":"m","hyperparameters":{{"epochs":{epochs},"learning_rate":{rate},"batch_size":{batch}}}}}"#
                );
                parse_all(job.as_bytes())?;
                let (id, type_, step, metrics) = event;
                let event = format!(
                    r#"{{"event_id":{id},"type":{type_},"step":{step},"metrics":{metrics}}}"#
                );
                parse_all(event.as_bytes())?;
            }
        }
    }

    #[test]
    fn a_cancel_takes_an_empty_body_or_an_optional_reason_and_nothing_else() {
        assert_eq!(parse_cancel_request(b""), Ok(None));
        assert_eq!(parse_cancel_request(b"  {} "), Ok(None));
        assert_eq!(parse_cancel_request(br#"{"reason":null}"#), Ok(None));
        assert_eq!(
            parse_cancel_request(br#"{"reason":"wrong data"}"#),
            Ok(Some("wrong data".into()))
        );
        let long = format!(
            r#"{{"reason":"{}"}}"#,
            "r".repeat(MAX_CANCEL_REASON_CHARS + 1)
        );
        assert!(matches!(
            parse_cancel_request(long.as_bytes()),
            Err(RequestError::InvalidField { .. })
        ));
        assert!(matches!(
            parse_cancel_request(br#"{"reason":7}"#),
            Err(RequestError::InvalidField { .. })
        ));
        assert!(matches!(
            parse_cancel_request(br#"{"why":"x"}"#),
            Err(RequestError::UnknownField(_))
        ));
        assert!(matches!(
            parse_cancel_request(b"[]"),
            Err(RequestError::InvalidJson(_))
        ));
    }
}
